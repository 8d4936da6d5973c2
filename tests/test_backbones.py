"""Backbones: the output contract, the front door's errors, weight loading round trips, freezing modes.

All offline on the CPU: CLIP uses the tiny registered config saved to a temporary file, the ImageNet
SE-ResNet50 is timm's architecture with random weights.
"""
from __future__ import annotations

import pytest
import torch
from PIL import Image
from torch import nn

from zssbir.data.transforms import CLIP_MEAN
from zssbir.data.transforms import build_transform
from zssbir.models import BackboneOutput, build_backbone, trainable_parameters

TINY = "clip:zssbir-tiny-vit"


def _check_contract(net, out, batch, n_tokens=None):
    assert isinstance(out, BackboneOutput)
    assert out.embedding.shape == (batch, net.embed_dim)
    assert out.tokens.ndim == 3 and out.tokens.shape[0] == batch and out.tokens.shape[2] == net.token_dim
    assert out.tokens.shape[1] >= 1 and (n_tokens is None or out.tokens.shape[1] == n_tokens)
    assert torch.isfinite(out.embedding).all() and torch.isfinite(out.tokens).all()
    assert net.preprocess is None or set(net.preprocess) == {"train", "eval"}
    assert isinstance(net.image_size, int) and isinstance(net.transform_convention, str)


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ---------------------------------------------------------------- front door
def test_unknown_name_lists_known_backbones():
    with pytest.raises(ValueError, match="known backbones.*small.*cse_resnet50.*clip:"):
        build_backbone("resnet9000")
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("clip:")


def test_unknown_kwargs_are_refused_with_the_accepted_list():
    with pytest.raises(ValueError, match=r"does not accept \['wdith'\].*width"):
        build_backbone("small", wdith=64)
    with pytest.raises(ValueError, match="train_mode"):
        build_backbone("cse_resnet50", train_mode="layernorm")
    with pytest.raises(ValueError, match="embed_dim"):
        build_backbone("small", embed_dim=0)


def test_unknown_open_clip_model():
    with pytest.raises(ValueError, match="unknown open_clip model 'NoSuchViT'.*ViT-B-32"):
        build_backbone("clip:NoSuchViT")


# ---------------------------------------------------------------- small
def test_small_contract_and_sizes():
    torch.manual_seed(0)
    net = build_backbone("small", embed_dim=64)
    _check_contract(net, net(torch.randn(2, 3, 64, 64)), 2, n_tokens=64)      # 64 px -> 8x8
    _check_contract(net, net(torch.randn(2, 3, 48, 48)), 2, n_tokens=36)      # other size: interpolated pos
    assert (net.image_size, net.token_dim, net.transform_convention) == (64, 128, "sake")
    net48 = build_backbone("small", image_size=48, width=64, heads=2, pool="cls")
    _check_contract(net48, net48(torch.randn(3, 3, 48, 48)), 3, n_tokens=36)
    x = build_transform("sketch", net.image_size, net.transform_convention, train=True)(Image.new("RGB", (80, 70), "white"))
    assert x.shape == (3, 64, 64)
    with pytest.raises(ValueError, match="multiple of 8"):
        build_backbone("small", image_size=60)


def test_small_gradients_reach_every_parameter():
    torch.manual_seed(0)
    net = build_backbone("small", embed_dim=32, domain_embedding=True)
    out = net(torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 0, 1]))
    (out.embedding.pow(2).mean() + out.tokens.pow(2).mean()).backward()
    missing = [n for n, p in net.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert missing == []


def test_small_domain_is_ignored_unless_asked():
    torch.manual_seed(0)
    net = build_backbone("small", embed_dim=32).eval()
    x = torch.randn(2, 3, 64, 64)
    a, b, c = net(x), net(x, torch.tensor([0, 0])), net(x, torch.tensor([1, 1]))
    assert torch.equal(a.embedding, b.embedding) and torch.equal(b.embedding, c.embedding)
    net = build_backbone("small", embed_dim=32, domain_embedding=True).eval()
    nn.init.normal_(net.domain_embed.weight)  # starts at zero; give it something to say
    assert not torch.allclose(net(x, torch.tensor([0, 0])).embedding, net(x, torch.tensor([1, 1])).embedding)
    with pytest.raises(ValueError, match="domain"):
        net(x)


def test_same_seed_same_weights():
    for name, kw in [("small", {}), ("cse_resnet50", {"imagenet_head": True}), (TINY, {"embed_dim": 16})]:
        torch.manual_seed(123)
        a = build_backbone(name, **kw)
        torch.manual_seed(123)
        b = build_backbone(name, **kw)
        assert _same_weights(a, b), name


# ---------------------------------------------------------------- CSE-ResNet50
@pytest.fixture(scope="module")
def cse():
    torch.manual_seed(0)
    return build_backbone("cse_resnet50", image_size=64, imagenet_head=True).eval()


def test_cse_contract_and_domain_conditioning(cse):
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        sketch, photo = cse(x, torch.tensor([0, 0])), cse(x, torch.tensor([1, 1]))
    _check_contract(cse, sketch, 2, n_tokens=4)  # 64 px / 32 = 2x2 map of 2048-d tokens
    assert sketch.logits_imagenet.shape == (2, 1000) and cse.token_dim == 2048
    assert cse.preprocess is None and cse.transform_convention == "sake"
    assert not torch.allclose(sketch.embedding, photo.embedding, atol=1e-5)
    mixed = cse(x, torch.tensor([0, 1]))
    assert torch.allclose(mixed.embedding[0], sketch.embedding[0], atol=1e-5)
    assert torch.allclose(mixed.embedding[1], photo.embedding[1], atol=1e-5)
    with pytest.raises(ValueError, match="domain-conditional"):
        cse(x)
    with pytest.raises(ValueError, match="0 \\(sketch\\) or 1"):
        cse(x, torch.tensor([0, 2]))


def test_cse_state_dict_round_trip(cse, tmp_path):
    path = tmp_path / "cse.pt"
    torch.save(cse.state_dict(), path)
    again = build_backbone("cse_resnet50", pretrained=str(path), image_size=64, imagenet_head=True)
    assert _same_weights(cse, again)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        build_backbone("cse_resnet50", pretrained=str(tmp_path / "missing.pt"))


@pytest.fixture(scope="module")
def timm_seresnet50(tmp_path_factory):
    timm = pytest.importorskip("timm")
    torch.manual_seed(1)
    model = timm.create_model("seresnet50", pretrained=False).eval()
    path = tmp_path_factory.mktemp("imagenet") / "seresnet50.pt"
    torch.save(model.state_dict(), path)
    return model, path


def test_timm_weights_map_completely_and_teacher_matches_timm(timm_seresnet50):
    from zssbir.models import build_imagenet_teacher
    from zssbir.models.cse_resnet import convert_imagenet_state_dict

    model, path = timm_seresnet50
    layout, trunk, fc, unmapped = convert_imagenet_state_dict(model.state_dict())
    assert (layout, unmapped, sorted(fc)) == ("timm", [], ["bias", "weight"])
    teacher = build_imagenet_teacher(str(path))
    assert all(not p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not teacher.training  # stays in eval mode
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.allclose(teacher(x), model(x), atol=1e-5)


def test_cse_from_imagenet_weights_starts_as_plain_se_with_svd_head(timm_seresnet50):
    model, path = timm_seresnet50
    net = build_backbone("cse_resnet50", pretrained=str(path), embed_dim=1000, imagenet_head=True).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        sketch, photo, logits = net(x, torch.tensor([0, 0])), net(x, torch.tensor([1, 1])), model(x)
    assert torch.equal(sketch.embedding, photo.embedding)  # domain weights start at zero
    # full-rank SVD split of the classifier: head(proj(pooled)) reproduces the ImageNet logits
    assert torch.allclose(sketch.logits_imagenet, logits, atol=1e-4)


def test_cadene_layout_with_sake_domain_column(timm_seresnet50):
    """Cadene/SAKE key names (layer0.*, se_module.*, last_linear, 1x1-conv SE weights) map too."""
    from zssbir.models.cse_resnet import CSEResNet50Backbone, _load_trunk, convert_imagenet_state_dict

    model, _ = timm_seresnet50
    cadene = {}
    for k, v in model.state_dict().items():
        k = k.replace("se.", "se_module.").replace("fc.", "last_linear.") if not k.startswith("fc.") else \
            k.replace("fc.", "last_linear.")
        k = "layer0." + k if k.startswith(("conv1.", "bn1.")) else k
        if k.endswith("se_module.fc2.weight"):  # SAKE's CSE checkpoint: one extra input column
            v = torch.cat([v, torch.full((v.shape[0], 1, 1, 1), 0.5)], dim=1)
        cadene[k] = v
    layout, trunk, fc, unmapped = convert_imagenet_state_dict(cadene)
    assert (layout, unmapped) == ("cadene", [])
    net = CSEResNet50Backbone(embed_dim=8, image_size=64, layout=layout)
    _load_trunk(net.trunk, trunk)
    assert bool(net.trunk.stride_in_1x1) and net.trunk.layer1[0].conv1.stride == (1, 1)
    assert net.trunk.layer2[0].conv1.stride == (2, 2)
    assert torch.equal(net.trunk.layer3[2].se.domain_weight, torch.full((1024,), 0.5))
    _check_contract(net, net(torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5)),
                             torch.tensor([0, 1])), 2, n_tokens=4)


# ---------------------------------------------------------------- CLIP
@pytest.fixture(scope="module")
def tiny_clip_file(tmp_path_factory):
    import open_clip

    from zssbir.models import register_tiny_clip

    name = register_tiny_clip()
    assert register_tiny_clip() == name  # idempotent
    torch.manual_seed(7)
    model = open_clip.create_model(name)  # random init
    path = tmp_path_factory.mktemp("clip") / "tiny.pt"
    torch.save(model.state_dict(), path)
    return model.state_dict(), path


def test_clip_loads_the_saved_weights_and_uses_open_clip_preprocessing(tiny_clip_file):
    saved, path = tiny_clip_file
    torch.manual_seed(99)  # a different seed: equal weights can only come from the file
    net = build_backbone(TINY, pretrained=str(path), embed_dim=24)
    assert all(torch.equal(v, saved["visual." + k]) for k, v in net.visual.state_dict().items())
    out = net(torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))
    _check_contract(net, out, 2, n_tokens=16)  # 32 px / patch 8 = 4x4
    assert (net.token_dim, net.image_size, net.transform_convention) == (32, 32, "clip")
    for split in ("train", "eval"):
        norm = [t for t in net.preprocess[split].transforms if type(t).__name__ == "Normalize"]
        assert len(norm) == 1 and tuple(norm[0].mean) == pytest.approx(CLIP_MEAN)
    x = net.preprocess["eval"](Image.new("RGB", (50, 40), "red"))
    assert x.shape == (3, 32, 32)
    assert torch.equal(net(x[None]).embedding, net(x[None], torch.tensor([1])).embedding)  # domain ignored


def test_clip_tokens_and_projection_options(tiny_clip_file):
    _, path = tiny_clip_file
    raw = build_backbone(TINY, pretrained=str(path), embed_dim=32, project=False, project_tokens=False).eval()
    assert isinstance(raw.head, nn.Identity) and raw.token_dim == 64
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    out = raw(x)
    raw.visual.output_tokens = False
    assert torch.allclose(out.embedding, raw.visual(x))  # CLIP's own image embedding
    assert out.tokens.shape == (1, 16, 64)
    with pytest.raises(ValueError, match="project=False"):
        build_backbone(TINY, pretrained=str(path), embed_dim=512, project=False)


def test_clip_train_modes(tiny_clip_file):
    _, path = tiny_clip_file
    net = build_backbone(TINY, pretrained=str(path), embed_dim=16, train_mode="layernorm")
    names = trainable_parameters(net)
    ln = {n for n, m in net.named_modules() if isinstance(m, nn.LayerNorm)}
    assert names and all(n.startswith("head.") or n.rsplit(".", 1)[0] in ln for n in names)
    assert {"head.weight", "head.bias", "visual.ln_post.weight", "visual.ln_pre.bias"} <= set(names)
    net.set_train_mode("frozen")
    assert trainable_parameters(net) == ["head.weight", "head.bias"]
    net.set_train_mode("full")
    assert len(trainable_parameters(net)) == len(list(net.parameters()))
    with pytest.raises(ValueError, match="train_mode"):
        net.set_train_mode("lora")


def test_clip_pretrained_errors_without_downloading(tmp_path):
    missing = tmp_path / "no" / "such.pt"
    with pytest.raises(FileNotFoundError, match=rf"{missing}.*tag.*existing local checkpoint file"):
        build_backbone(TINY, pretrained=str(missing))
    with pytest.raises(ValueError, match=r"unknown pretrained tag 'opneai'.*available tags: \['openai'"):
        build_backbone("clip:ViT-B-32", pretrained="opneai")


def test_text_encoder_is_frozen_deterministic_and_loads_the_same_file(tiny_clip_file):
    from zssbir.models import build_clip_towers, build_text_encoder, class_prompts

    saved, path = tiny_clip_file
    assert class_prompts(["hot_air_balloon", "cat"], "sketch") == ["a sketch of a hot air balloon", "a sketch of a cat"]
    assert class_prompts(["cat"], "photo") == ["a photo of a cat"]
    with pytest.raises(ValueError):
        class_prompts(["cat"], "drawing")
    text = build_text_encoder("zssbir-tiny-vit", pretrained=str(path))
    assert not isinstance(text, nn.Module) and not any(p.requires_grad for p in text.model.parameters())
    text_keys = [k for k in saved if not k.startswith("visual.")]
    own = text.model.state_dict()
    assert all(torch.equal(own[k], saved[k]) for k in text_keys)
    a = text.encode_classes(["cat", "hot_air_balloon"], "photo")
    b = text(["a photo of a cat", "a photo of a hot air balloon"])
    assert a.shape == (2, text.text_dim) == (2, 32) and not a.requires_grad and torch.equal(a, b)
    image, text2 = build_clip_towers("zssbir-tiny-vit", pretrained=str(path), embed_dim=8)
    assert torch.equal(text2.encode_classes(["cat", "hot_air_balloon"], "photo"), a)
    assert torch.allclose(text2(["a photo of a cat"]), a[:1], atol=1e-5)  # batch size only changes rounding
    assert all(torch.equal(v, saved["visual." + k]) for k, v in image.visual.state_dict().items())
    assert any(p.requires_grad for p in image.visual.parameters())  # the text side froze only itself
