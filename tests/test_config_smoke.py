"""Every settings file in configs/ runs two training steps and one scoring on CPU with random weights, on a
fabricated tree in its benchmark's layout, at its real image size and backbone (only the batch is shrunk), so a
GPU user never meets a shape or settings error first."""
import pickle

import numpy as np
import pytest
import torch

from fabricate_real import QUICKDRAW, SKETCHY, TUBERLIN, quickdraw, sketchy_original, sketchy_sake, tuberlin
from zssbir import paths
from zssbir.data.datasets import load_split
from zssbir.data.prepare import prepare
from zssbir.study.results import load_results
from zssbir.study.runs import run_config
from zssbir.study.scoring import score_and_record
from zssbir.training.loop import load_trained, train

CONFIGS = sorted(p.relative_to(paths.project_root() / "configs").as_posix()
                 for p in (paths.project_root() / "configs").glob("[!s]*/*.yaml"))
TREES = {"sketchy_ext_split1": (sketchy_sake, SKETCHY), "sketchy_ext_split2": (sketchy_original, SKETCHY),
         "tuberlin_ext": (tuberlin, TUBERLIN), "quickdraw_ext": (quickdraw, QUICKDRAW)}


@pytest.fixture(scope="module")
def imagenet_file(tmp_path_factory):
    """An ImageNet SE-ResNet50 state dict in timm's layout (random weights) for `pretrained` and the teacher."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("imagenet") / "seresnet50.pt"
    torch.save(timm.create_model("seresnet50", pretrained=False).state_dict(), path)
    return str(path)


def test_every_real_benchmark_has_a_config_of_each_method():
    assert {c.split("/")[0] for c in CONFIGS} == {"clusterretri", "dmwa"}
    assert {c.split("/")[1][:-5] for c in CONFIGS} == set(TREES)


@pytest.mark.slow
@pytest.mark.parametrize("name", CONFIGS)
def test_config_trains_two_steps_and_scores(name, isolated_dirs, imagenet_file):
    config = run_config(name)
    fabricate, classes = TREES[config.dataset]
    prepare(config.dataset, [fabricate(isolated_dirs / "download")], classes=classes)
    overrides = {"batch_size": 4 if config.method == "clusterretri" else 4, "epochs": 1, "max_steps_per_epoch": 2,
                 "num_workers": 0, "device": "cpu"}
    if config.method == "clusterretri":
        overrides.update(pretrained=imagenet_file, teacher_weights=imagenet_file)
        if config.lambda_kd_mask:
            seen = load_split(config.dataset, "train", "photo").class_names
            mask = isolated_dirs / "cid_mask.pickle"
            mask.write_bytes(pickle.dumps({i: np.random.default_rng(i).random(1000) for i in range(len(seen))}))
            overrides["kd_mask"] = str(mask)
    else:
        overrides["pretrained"] = None  # no CLIP weights offline: the same tower, randomly initialised
    config = run_config(name, overrides)
    result = train(config, run_dir=isolated_dirs / "run", progress=False)
    assert len(result.history) == 1 and np.isfinite(result.history[0]["loss_total"])
    model, loaded = load_trained(isolated_dirs / "run", device="cpu")
    written = score_and_record(model, loaded, "smoke", cluster=(2, 2, "rerank"), device="cpu")
    records = {p: load_results(p)[0] for p in written.values()}
    for record in records.values():
        assert record["params"]["train"]["image_size"] == config.image_size
        assert record["params"]["train"]["protocol"] == config.protocol
        assert 0 <= record["metrics"]["map@all"]["value"] <= 1
