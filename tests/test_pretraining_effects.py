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
    assert len(effects) == 4
    for _, row in effects.iterrows():
        assert row["n"] == 2
    table = runs.pivot_table(index="seed", columns=["start", "lambda_da"], values="map@all")
    rows = effects.set_index("comparison")
    for lda in (0.0, 0.1):
        expected = (table[("pretrained", lda)] - table[("scratch", lda)]).mean()
        assert rows.loc[f"pretrained - scratch (L_DA {lda:g})", "difference"] == pytest.approx(expected)
        assert rows.loc[f"pretrained - scratch (L_DA {lda:g})", "mean_without"] == pytest.approx(
            table[("scratch", lda)].mean())
    for start in ("scratch", "pretrained"):
        expected = (table[(start, 0.1)] - table[(start, 0.0)]).mean()
        assert rows.loc[f"L_DA 0.1 - none ({start})", "difference"] == pytest.approx(expected)
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


def test_the_readme_quotes_the_measured_pretraining_file():
    """README's pretraining paragraph copies its figures from docs/pretraining_effects.json: they must agree."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    data = json.loads((root / "docs" / "pretraining_effects.json").read_text())
    readme = (root / "README.md").read_text()
    zero = data["zero_shot_map@all"]
    assert f"mAP@all {zero['pretrained']:.3f} (a random one:\n  {zero['random']:.3f}" in readme
    rows = {r["comparison"]: r for r in data["effects"]}
    base = rows["pretrained - scratch (L_DA 0)"]
    assert (f"reach {base['mean_with']:.3f} from the pretrained start against {base['mean_without']:.3f} from scratch "
            f"({base['difference']:+.3f}, 95 %\n  CI {base['ci_low']:+.3f} to {base['ci_high']:+.3f}") in readme
    r = rows["pretrained - scratch (L_DA 0.1)"]
    assert (f"with L_DA the pretrained start gains {r['difference']:+.3f} (CI {r['ci_low']:+.3f} to "
            f"{r['ci_high']:+.3f})") in readme.replace("\n  ", " ")
    for start in ("scratch", "pretrained"):
        r = rows[f"L_DA 0.1 - none ({start})"]
        assert f"{r['difference']:+.3f}, CI {r['ci_low']:+.3f} to {r['ci_high']:+.3f}" in readme.replace("\n  ", " ")
