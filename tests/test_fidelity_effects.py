"""The measurements behind docs/fidelity.md: epoch steps per mode, scoring effects, and the written report."""
import json

import numpy as np
import pandas as pd
import pytest

from zssbir.data.tools import ensure_dataset
from zssbir.study import fidelity
from zssbir.study.runs import run_config


def test_epoch_steps_follow_the_two_modes(isolated_dirs):
    ensure_dataset("synthetic_tiny", progress=False)
    config = run_config("study/clusterretri.yaml", {"dataset": "synthetic_tiny", "batch_size": 12})
    steps = fidelity.epoch_steps(config)
    from zssbir.data.datasets import load_split

    photos, sketches = (len(load_split("synthetic_tiny", "train", d)) for d in ("photo", "sketch"))
    assert steps == {"photos": photos // 8, "shorter_loader": min(photos // 8, sketches // 4)}


def test_scoring_effects_and_the_written_report(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 15)
    centres = rng.normal(size=(4, 8))
    feats = {d: ((centres[labels] + 0.8 * rng.normal(size=(60, 8))).astype(np.float32), labels)
             for d in ("sketch", "photo")}
    scoring = fidelity.scoring_effects(feats, kmeans_seeds=3)
    assert len(scoring) == 4 and (scoring["spread"].iloc[:2] >= 0).all()
    assert scoring["choice"].iloc[2].startswith("ties at M=1") and scoring["choice"].iloc[3].startswith("Sem-PCYC AP")
    training = pd.DataFrame([{"choice": "augmentation", "authors": "authors", "study": "study", "n": 3,
                              "difference": -0.01, "ci_low": -0.05, "ci_high": 0.03, "p_value": 0.5, "note": "x"}])
    written = fidelity.write(training, scoring, tmp_path / "effects", "python -m zssbir.study.fidelity")
    data = json.loads(written[0].read_text())
    assert data["command"] == "python -m zssbir.study.fidelity" and data["training"][0]["difference"] == -0.01
    text = written[1].read_text()
    assert "Written by `python -m zssbir.study.fidelity`" in text and "| augmentation |" in text
    assert pytest.approx(scoring["spread"].iloc[2]) == data["scoring"][2]["spread"]


def test_the_fidelity_table_quotes_the_measured_file():
    """docs/fidelity.md copies its effect figures from docs/fidelity_effects.json: they must agree."""
    import json
    from pathlib import Path

    docs = Path(__file__).resolve().parent.parent / "docs"
    data = json.loads((docs / "fidelity_effects.json").read_text())
    table = (docs / "fidelity.md").read_text()
    rows = {r["choice"]: r for r in data["training"]}
    for choice, line_start in (("augmentation", "| 4 |"), ("selection", "| 8 |")):
        r = rows[choice]
        line = next(line for line in table.splitlines() if line.startswith(line_start))
        assert f"{r['difference']:+.3f} mAP@all" in line and f"{r['ci_low']:+.3f} to {r['ci_high']:+.3f}" in line, line
    scoring = {r["choice"]: r for r in data["scoring"]}
    line = next(line for line in table.splitlines() if line.startswith("| 5 |"))
    for M in (1, 2):
        r = next(v for k, v in scoring.items() if k.startswith(f"k-means seed (M={M},"))
        assert f"{r['low']:.3f}-{r['high']:.3f} at M = {M}" in line, line
    for prefix, line_start in (("ties at M=1", "| 6 |"), ("Sem-PCYC AP", "| 10 |")):
        r = next(v for k, v in scoring.items() if k.startswith(prefix))
        line = next(line for line in table.splitlines() if line.startswith(line_start))
        assert f"{r['spread']:+.3f} mAP@all ({r['high']:.3f} vs {r['low']:.3f})" in line, line
    assert data["commit"][:7] in table
