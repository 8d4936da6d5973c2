"""The pretraining study (zssbir.study.pretraining) on the tiny corpus and benchmark: the pretrained start is the
pretraining's backbone, the effects are the paired differences of the runs it lists, and the report says so."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from zssbir.study import pretraining
from zssbir.training import pretrain as pt
from zssbir.training.config import TrainConfig

from test_pretrain import TINY


@pytest.fixture
def tiny_pretrained(isolated_dirs, monkeypatch):
    out = pt.pretrain(TINY, progress=False)
    # "pretrain" in a config names the default pretraining; here it is the tiny one
    monkeypatch.setattr(pt, "pretrained_weights", lambda settings=None: out / "backbone.pt")
    return out


def test_pretrained_and_scratch_runs_are_paired_over_seeds(tiny_pretrained, tmp_path):
    base = TrainConfig(dataset="synthetic_tiny", image_size=32, embed_dim=32, batch_size=12, epochs=1,
                       max_steps_per_epoch=2, backbone_params=TINY.backbone_params)
    zero = pretraining.zero_shot(base, device="cpu")
    assert set(zero) == {"pretrained", "random"} and zero["pretrained"] != zero["random"]
    runs, effects = pretraining.start_effects(base, [0, 1], device="cpu")
    assert len(runs) == 8 and set(runs["start"]) == {"scratch", "pretrained"}
    pretrained_runs = runs[runs.start == "pretrained"]
    assert pretrained_runs.run.str.contains("_p").all() and runs.run.nunique() == 8
    for lambda_da, row in effects.set_index("lambda_da").iterrows():
        part = runs[runs.lambda_da == lambda_da].pivot(index="seed", columns="start", values="map@all")
        assert row["n"] == 2
        assert row["difference"] == pytest.approx(float((part.pretrained - part.scratch).mean()))
        assert row["mean_scratch"] == pytest.approx(float(part.scratch.mean()))
    history = json.loads((tiny_pretrained / "pretrain.json").read_text())["history"]
    paths = pretraining.write(history, zero, runs, effects, tmp_path / "effects", "cmd", "retrain")
    data = json.loads(paths[0].read_text())
    assert data["effects"][0]["difference"] == pytest.approx(effects.difference.iloc[0])
    text = paths[1].read_text()
    assert "Written by `cmd`" in text and f"{zero['pretrained']:.4f}".rstrip("0") in text
    assert text.count("\n| ") >= len(history) + 1 + 2 + 8


def test_the_pretrained_start_is_the_pretrainings_backbone(tiny_pretrained):
    from zssbir.models.factory import build_model

    config = TrainConfig(dataset="synthetic_tiny", image_size=32, embed_dim=32,
                         backbone_params=TINY.backbone_params, pretrained="pretrain")
    model = build_model(config, ["a", "b"])
    saved = torch.load(tiny_pretrained / "backbone.pt", weights_only=True)
    assert all(torch.equal(model.backbone.state_dict()[k], v) for k, v in saved.items())
    assert not np.allclose(build_model(TrainConfig(**{**config.to_dict(), "pretrained": None}), ["a", "b"])
                           .backbone.proj.weight.detach(), saved["proj.weight"])
