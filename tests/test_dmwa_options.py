"""DMWA's fidelity options: CLIP's image-text space kept at the start, the inverse weighting, prompt word tokens."""
import open_clip
import pytest
import torch

from zssbir.models.clip_towers import build_clip_backbone, build_text_encoder, register_tiny_clip
from zssbir.models.dmwa import DMWA, DMWAParams, weight_list
from zssbir.models.factory import build_model
from zssbir.study.dmwa_analysis import ablation_grid, variant_label
from zssbir.training.config import TrainConfig

CLASSES = ["cat", "hot air balloon", "teddy_bear"]


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    name = register_tiny_clip()
    torch.manual_seed(0)
    ckpt = tmp_path_factory.mktemp("clip") / "tiny_clip.pt"
    torch.save(open_clip.create_model(name).state_dict(), ckpt)
    return name, str(ckpt)


def test_inverse_weighting_gives_the_most_weight_to_the_worst_aligned_pair():
    a_loc, a_glob = torch.tensor([0.9, 0.5, 0.1]), torch.tensor([0.8, 0.5, 0.2])
    aligned = weight_list(a_loc, a_glob, 0.5, 0.2)
    inverse = weight_list(a_loc, a_glob, 0.5, 0.2, "misaligned")
    score = 0.5 * a_loc + 0.5 * a_glob
    assert torch.allclose(inverse, 3 * torch.softmax(-score / 0.2, dim=0))
    assert inverse.argmax() == 2 and aligned.argmax() == 0 and inverse.mean().item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"emphasis must be one of \('aligned', 'misaligned'\)"):
        DMWAParams(emphasis="worst")


def test_ablation_grid_adds_the_inverse_weighting_with_its_own_label():
    main = {"weighting": "both", "loss": "quadruplet"}
    grid = ablation_grid(main, ["none", "both"], ["triplet"], ["misaligned"])
    assert grid == [main, dict(main, weighting="none"), dict(main, loss="triplet"), dict(main, emphasis="misaligned")]
    assert variant_label(grid[-1]) == "DMWA (weighting both inverse, quadruplet)"
    assert variant_label(main) == "DMWA (weighting both, quadruplet)"


def test_clip_head_starts_as_the_identity_when_widths_match(tiny_clip):
    name, ckpt = tiny_clip
    same = build_clip_backbone(name, pretrained=ckpt, embed_dim=32)            # CLIP's output width is 32
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        pooled, _ = same.visual(images)
        assert torch.allclose(same(images).embedding, pooled)                 # CLIP's own image embedding
    other = build_clip_backbone(name, pretrained=ckpt, embed_dim=16)           # widths differ: random head
    assert other.head.weight.shape == (16, 32)
    forced = build_clip_backbone(name, pretrained=ckpt, embed_dim=32, head_init="random")
    assert not torch.allclose(forced.head.weight, torch.eye(32))
    with pytest.raises(ValueError, match="head_init='identity' needs embed_dim = CLIP's 32"):
        build_clip_backbone(name, pretrained=ckpt, embed_dim=16, head_init="identity")


def test_text_projection_is_the_identity_on_clip_and_random_elsewhere(tiny_clip, isolated_dirs):
    name, ckpt = tiny_clip
    clip = build_model(TrainConfig(method="dmwa", backbone=f"clip:{name}", pretrained=ckpt, embed_dim=32), CLASSES)
    assert torch.equal(clip.text_proj.weight, torch.eye(32))
    small = build_model(TrainConfig(method="dmwa", embed_dim=32, image_size=32,
                                    backbone_params={"width": 32, "depth": 1, "heads": 2}), CLASSES)
    assert not torch.allclose(small.text_proj.weight, torch.eye(32))
    with pytest.raises(ValueError, match="text_projection='identity' needs text width 32 = embed_dim 16"):
        build_model(TrainConfig(method="dmwa", backbone=f"clip:{name}", pretrained=ckpt, embed_dim=16,
                                method_params={"text_projection": "identity"}), CLASSES)


def test_prompt_word_tokens_and_the_local_block_that_uses_them(tiny_clip):
    name, ckpt = tiny_clip
    encoder = build_text_encoder(name, ckpt)
    words, mask = encoder.encode_class_tokens(CLASSES, "photo")
    tokenizer = open_clip.get_tokenizer(name)
    n_words = [int((tokenizer([p])[0] > 0).sum()) - 2 for p in ["a photo of a cat", "a photo of a hot air balloon",
                                                                 "a photo of a teddy bear"]]
    assert mask.sum(1).tolist() == n_words and words.shape == (3, max(n_words) + 1, encoder.text_dim)
    with pytest.raises(ValueError, match="set local_text=True as well"):
        DMWAParams(text_tokens=True)
    config = TrainConfig(method="dmwa", backbone=f"clip:{name}", pretrained=ckpt, embed_dim=32,
                         method_params={"local_text": True, "text_tokens": True})
    model = build_model(config, CLASSES)
    assert torch.equal(model.text_photo_tokens, words) and torch.equal(model.text_photo_mask, mask)
    # an image token equal to a word token of its class prompt (after the projection) has relevance 1
    word = model.text_proj(torch.nn.functional.normalize(words[1, 2], dim=-1))
    image_tokens = torch.stack([word, -word])[None]                            # [1, 2, D]
    relevance = model._token_relevance(image_tokens, "photo", torch.tensor([1]))
    assert relevance[0, 0].item() == pytest.approx(1.0, abs=1e-5) and relevance[0, 1] < 0.5


def test_text_tokens_need_the_token_embeddings():
    backbone = build_model(TrainConfig(method="dmwa", embed_dim=32, image_size=32,
                                       backbone_params={"width": 32, "depth": 1, "heads": 2}), CLASSES).backbone
    texts = torch.randn(3, 32, generator=torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match=r"text_tokens=True needs the prompts' token embeddings"):
        DMWA(backbone, texts, texts, DMWAParams(local_text=True, text_tokens=True))
