"""What 00_pretraining shows (zssbir.study.pretraining), on the tiny corpus and benchmark: the corpus examples are
rendered without generating the corpus, the zero-shot measures use the pretraining's backbone and text tower, and
the sentences say what the numbers are."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from zssbir.study import pretraining
from zssbir.training import pretrain as pt
from zssbir.training import pretrained_store as store
from zssbir.training.config import TrainConfig

from test_pretrain import TINY

BASE = TrainConfig(dataset="synthetic_tiny", image_size=32, embed_dim=32, batch_size=12, epochs=1,
                   max_steps_per_epoch=2, backbone_params=TINY.backbone_params)


@pytest.fixture
def tiny_pretrained(isolated_dirs, monkeypatch):
    out = pt.pretrain(TINY, progress=False)
    # "pretrain" in a config names the default pretraining; here it is the tiny one
    monkeypatch.setattr(store, "pretrained_weights", lambda settings=None: out / "backbone.pt")
    return out


def test_corpus_examples_are_the_corpus_photos_and_captions_without_the_corpus(isolated_dirs):
    from zssbir.data.synthetic_pretrain import CORPORA, corpus_programs, render_corpus_photo

    examples = pretraining.corpus_examples(3, 2, corpus="synthetic_pretrain_tiny")
    programs = corpus_programs(CORPORA["synthetic_pretrain_tiny"])[:3]
    assert [(name, caption) for name, caption, _ in examples] == [(p.name, p.summary) for p in programs]
    first = np.asarray(render_corpus_photo(programs[0], 1, CORPORA["synthetic_pretrain_tiny"]))
    assert np.array_equal(np.asarray(examples[0][2][1]), first) and len(examples[2][2]) == 2
    assert not any((isolated_dirs / "data").iterdir())  # nothing was generated


def test_zero_shot_measures_use_the_pretrained_backbone_and_text_tower(tiny_pretrained):
    retrieval = pretraining.zero_shot_retrieval(BASE, device="cpu")
    assert set(retrieval) == {"pretrained", "random"} and retrieval["pretrained"] != retrieval["random"]
    text, confusion, unseen = pretraining.zero_shot_text(BASE, device="cpu")
    assert list(text["domain"]) == ["photo", "sketch"] and (text["chance"] == 1 / len(unseen)).all()
    assert confusion.shape == (len(unseen), len(unseen)) and np.allclose(confusion.sum(1), 1)
    photos = text.set_index("domain").loc["photo"]
    assert photos["top1"] == pytest.approx(np.trace(confusion) / len(unseen))  # equal photos per class here
    info, history = pretraining.pretraining(TINY, progress=False)
    assert len(history) == TINY.epochs and info["folder"] == str(tiny_pretrained)
    lines = pretraining.sentences(info, retrieval, text)
    assert f"mAP@all {retrieval['pretrained']:.3f}, against {retrieval['random']:.3f}" in lines[1]
    assert f"label their photos with top-1 {photos['top1']:.3f} (chance {1 / len(unseen):.3f}" in lines[2]
    assert "label their sketches with top-1" in lines[3]
    assert f"held-out top-1 {history['val_top1'].iloc[-1]:.3f}" in lines[0]


def test_the_pretrained_start_is_the_pretrainings_backbone(tiny_pretrained):
    from zssbir.models.factory import build_model

    config = TrainConfig(dataset="synthetic_tiny", image_size=32, embed_dim=32,
                         backbone_params=TINY.backbone_params, pretrained="pretrain")
    model = build_model(config, ["a", "b"])
    saved = torch.load(tiny_pretrained / "backbone.pt", weights_only=True)
    assert all(torch.equal(model.backbone.state_dict()[k], v) for k, v in saved.items())
    assert not np.allclose(build_model(TrainConfig(**{**config.to_dict(), "pretrained": None}), ["a", "b"])
                           .backbone.proj.weight.detach(), saved["proj.weight"])


def test_dmwa_from_the_pretrained_start_encodes_captions_with_the_pretrained_text_tower(tiny_pretrained):
    from zssbir.data.synthetic_pretrain import benchmark_captions, benchmark_programs
    from zssbir.models.factory import build_model
    from zssbir.models.small_text import load_small_text_encoder

    names = [p.name for p in benchmark_programs()["synthetic_tiny"][:3]]
    config = TrainConfig(method="dmwa", dataset="synthetic_tiny", image_size=32, embed_dim=32,
                         backbone_params=TINY.backbone_params, pretrained="pretrain")
    model = build_model(config, names)
    with torch.no_grad():
        expected = load_small_text_encoder(tiny_pretrained / "text.pt").encode(benchmark_captions("synthetic_tiny",
                                                                                                  names))
    assert torch.allclose(model.text_photo, expected, atol=1e-6) and torch.equal(model.text_sketch, model.text_photo)
    assert torch.equal(model.text_proj.weight, torch.eye(32))  # the shared space is kept at the start
    scratch = build_model(TrainConfig(**{**config.to_dict(), "pretrained": None}), names)
    assert scratch.text_photo.shape[1] != 32 or not torch.allclose(scratch.text_photo, expected)
