"""The weight list's control: training pairs degraded on purpose (mismatched anchors), and the report step that
trains on them."""
import numpy as np
import pandas as pd
import pytest

from zssbir import paths
from zssbir.config import TrainConfig
from zssbir.data.quadruplets import QuadrupletSampler, mismatched_photos
from zssbir.study import findings
from zssbir.study.dmwa_analysis import weight_quality, weight_quality_sentence
from zssbir.study.pipeline import load_pipeline


def _sampler(share, seed=3):
    photo_labels = np.repeat(np.arange(6), 8)
    sketch_labels = np.repeat(np.arange(6), 10)
    return QuadrupletSampler(sketch_labels, [""] * len(sketch_labels), photo_labels,
                             [f"p{i}" for i in range(len(photo_labels))], seed=seed, mismatched=share)


def test_a_fixed_share_of_photos_gets_anchors_of_another_class_and_nothing_else_changes():
    clean, degraded = _sampler(0.0), _sampler(0.25)
    assert degraded.mismatched.sum() == 12 and not clean.mismatched.any()
    assert (_sampler(0.25, seed=9).mismatched == degraded.mismatched).all()  # the data's property, not the seed's
    for epoch in (0, 1):
        a, b = clean.epoch(epoch), degraded.epoch(epoch)
        bad = degraded.mismatched[b[:, 1]]
        assert (a[~bad] == b[~bad]).all() and (a[:, 1:] == b[:, 1:]).all()  # only the mismatched anchors differ
        assert (degraded.sketch_labels[b[bad, 0]] != degraded.photo_labels[b[bad, 1]]).all()
        assert (clean.sketch_labels[a[:, 0]] == clean.photo_labels[a[:, 1]]).all()
    assert (degraded.epoch(0) == _sampler(0.25).epoch(0)).all()  # a resumed run draws the same


def test_mismatched_photos_rounds_the_share():
    assert mismatched_photos(10, 0.25).sum() == 2 and mismatched_photos(10, 0.0).sum() == 0


@pytest.mark.parametrize("values, message", [({"method": "dmwa", "mismatched_pairs": 1.0}, "share in \\[0, 1\\)"),
                                             ({"method": "dmwa", "mismatched_pairs": True}, "share in"),
                                             ({"mismatched_pairs": 0.25}, "clusterretri run has no")])
def test_bad_settings_are_refused(values, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**values)


def test_weight_quality_says_whether_the_weights_find_the_bad_pairs():
    probe = pd.DataFrame({"w": [0.2, 0.3, 1.2, 1.1, 1.3, 1.0], "mismatched": [True, True, False, False, False, False]})
    q = weight_quality(probe)
    assert q["mismatched"] == 2 and q["mean_w_mismatched"] == pytest.approx(0.25) and q["r"] > 0.9
    assert "tracks the injected quality" in weight_quality_sentence(q)
    inverse = weight_quality(probe.assign(w=2.0 - probe["w"]))  # the bad pairs weigh most
    assert inverse["r"] == pytest.approx(-q["r"]) and "weighs mismatched pairs MORE" in weight_quality_sentence(inverse)
    noise = weight_quality(probe.assign(w=[1.0, 0.5, 1.0, 0.5, 1.0, 0.5]))
    assert "does not separate" in weight_quality_sentence(noise)
    assert "has no injected" in weight_quality_sentence(weight_quality(probe.assign(mismatched=False)))


def test_the_mismatched_claims_compare_degraded_runs_only():
    def rows(label, noise, values):
        return [{"dataset": "d", "metric": "map@all", "method": "dmwa", "lambda_da": 0.0, "retrieval": "exact",
                 "label": f"{label}, exact", "seed": s, "value": v, "start": "pretrained", "mismatched_pairs": noise}
                for s, v in enumerate(values)]
    frame = pd.DataFrame(rows("DMWA (weighting both, quadruplet)", 0.0, [0.5, 0.5, 0.5])
                         + rows("DMWA (weighting none, quadruplet)", 0.0, [0.4, 0.4, 0.4])
                         + rows("DMWA (weighting both, quadruplet), 25% mismatched pairs", 0.25, [0.30, 0.31, 0.32])
                         + rows("DMWA (weighting none, quadruplet), 25% mismatched pairs", 0.25, [0.20, 0.20, 0.21])
                         + rows("DMWA (weighting both inverse, quadruplet), 25% mismatched pairs", 0.25,
                                [0.1, 0.1, 0.12]))
    table = findings.claim_table(frame, "d").set_index("claim")
    assert table.at["the weight list improves alignment", "difference"] == pytest.approx(0.1)
    assert table.at["on mismatched training pairs, the weight list improves alignment", "mean_with"] == \
        pytest.approx(0.31)
    assert table.at["on mismatched training pairs, the weight list beats its inverse", "mean_without"] == \
        pytest.approx((0.1 + 0.1 + 0.12) / 3)


def test_the_full_pipeline_adds_its_steps_after_the_ones_they_extend(tmp_path):
    base = [s.name for s in load_pipeline()]
    full = [s.name for s in load_pipeline(paths.notebooks_dir() / "pipeline_full.yml")]
    i = full.index("04_dmwa")
    assert full[i + 1] == "04_dmwa_mismatched_pairs" and [n for n in full if n in base] == base
    step = load_pipeline(paths.notebooks_dir() / "pipeline_full.yml")[i + 1]
    assert step.parameters["overrides"]["mismatched_pairs"] == 0.25
    bad = tmp_path / "bad.yml"
    bad.write_text(f"extends: {paths.notebooks_dir() / 'pipeline.yml'}\n"
                   "steps:\n  - {notebook: 04_dmwa.ipynb, name: x, after: nowhere}\n")
    with pytest.raises(ValueError, match="comes after 'nowhere', which is not a step"):
        load_pipeline(bad)
