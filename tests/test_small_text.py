"""The miniature's small text tower (models.small_text) and how DMWA takes it: captions of class programs (never
names), odd captions, the saved file, and the choice of text tower by start."""
from __future__ import annotations

import pytest
import torch

from zssbir.data.synthetic_pretrain import benchmark_captions, benchmark_programs
from zssbir.models import small_text as st
from zssbir.models.dmwa import DMWAParams, encode_class_texts, text_tower_choice


def _encoder(captions, **kw):
    torch.manual_seed(0)
    return st.SmallTextEncoder(st.build_vocabulary(captions), embed_dim=16, width=16, depth=1, heads=2, **kw)


def test_words_vocabulary_and_odd_captions():
    assert st.caption_words("Stacked: RING on top of star; fills: checked, 3x3 grid") == \
        ["stacked", "ring", "on", "top", "of", "star", "fills", "checked", "3x3", "grid"]
    vocab = st.build_vocabulary(["b a", "a c"])
    assert vocab == [st.PAD, st.UNKNOWN, "a", "b", "c"]
    enc = _encoder(["b a", "a c"], max_words=3)
    ids, mask = enc.tokenize(["a b", "zebra a", "", ";;", "a b c a b c"])
    assert ids[0, :2].tolist() == [2, 3] and mask[0].tolist() == [True, True, False]
    assert ids[1, 0] == 1  # an unknown word has its own id, not padding
    assert ids[2, 0] == 1 and mask[2, 0] and ids[3, 0] == 1  # an empty caption is one unknown word, not nothing
    assert mask[4].all() and ids.shape[1] == 3  # cut at max_words
    assert enc.unknown_words(["a zebra", "Quagga!"]) == ["quagga", "zebra"]
    with pytest.raises(ValueError, match="starts with"):
        st.SmallTextEncoder(["a", "b"])


def test_encoding_ignores_padding_and_the_file_round_trips(tmp_path):
    enc = _encoder(["ring on star", "star beside ring with legs"]).eval()
    alone = enc.encode(["ring on star"])
    padded = enc.encode(["ring on star", "star beside ring with legs"])[:1]
    assert torch.allclose(alone, padded, atol=1e-5)  # the longer caption's padding does not leak into the shorter
    assert not torch.allclose(enc.encode(["ring on star"]), enc.encode(["star on ring"]))  # word order counts
    path = tmp_path / "text.pt"
    torch.save(enc.file_state(), path)
    loaded = st.load_small_text_encoder(path)
    assert not any(p.requires_grad for p in loaded.parameters())
    with torch.no_grad():
        assert torch.allclose(loaded.encode(["ring on star"]), enc.encode(["ring on star"]), atol=1e-6)
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a small text tower file"):
        st.load_small_text_encoder(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="make pretrain"):
        st.load_small_text_encoder(tmp_path / "missing.pt")
    broken = enc.file_state()
    for change in ({"state_dict": {}}, {"settings": {**broken["settings"], "width": 32, "heads": 2}},
                   {"settings": {**broken["settings"], "colour": 1}}):
        torch.save({**broken, **change}, tmp_path / "broken.pt")
        with pytest.raises(ValueError, match="does not hold a text tower of its own settings .*make pretrain"):
            st.load_small_text_encoder(tmp_path / "broken.pt")


def test_contrastive_logits_are_scaled_cosines():
    images, texts = torch.randn(3, 8), torch.randn(5, 8)
    logits = st.contrastive_logits(images, texts, torch.tensor(2.0))
    expected = torch.exp(torch.tensor(2.0)) * torch.nn.functional.cosine_similarity(images[:, None], texts[None], -1)
    assert torch.allclose(logits, expected, atol=1e-5)
    assert st.contrastive_logits(images, texts, torch.tensor(10.0)).abs().max() <= 100 + 1e-4  # capped like CLIP


def test_benchmark_captions_are_program_summaries_never_names():
    programs = benchmark_programs()["synthetic_tiny"]
    names = [p.name for p in programs[:3]]
    captions = benchmark_captions("synthetic_tiny", names[::-1])
    assert captions == [p.summary for p in programs[:3]][::-1]
    assert not any(name in caption for name, caption in zip(names[::-1], captions))
    with pytest.raises(ValueError, match="no class programs to caption.*clip:<model>"):
        benchmark_captions("sketchy_ext_split1", ["cat"])
    with pytest.raises(ValueError, match="no classes named \\['hot air balloon'\\].*regenerate"):
        benchmark_captions("synthetic_tiny", [names[0], "hot air balloon"])


def test_dmwa_takes_the_miniature_text_tower_only_from_the_pretrained_small_start():
    params = DMWAParams()
    assert text_tower_choice("small", "pretrain", params) == ("pretrain", None)
    assert text_tower_choice("small", None, params)[0] != "pretrain"  # scratch: the random tiny CLIP codes
    assert text_tower_choice("small", "/some/backbone.pt", params)[0] != "pretrain"
    assert text_tower_choice("clip:ViT-B-32", "openai", params) == ("ViT-B-32", "openai")
    assert text_tower_choice("small", "pretrain", DMWAParams(text_model="ViT-B-32")) == ("ViT-B-32", None)
    with pytest.raises(ValueError, match="text_tokens=True needs a CLIP text tower"):
        encode_class_texts(["a"], "pretrain", None, tokens=True, dataset="synthetic_tiny")
