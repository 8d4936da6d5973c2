"""Issue 24: ``make bench-gpu`` (bench/bench_gpu.py). Its tiny CPU form runs every real-benchmark settings file through
a fabricated tree, the training loop (two epochs), extraction and scoring, and prints one line of figures per file;
its real-size estimates follow the published sizes and each method's epoch."""
from __future__ import annotations

import sys

import pytest

from zssbir import paths

sys.path.insert(0, str(paths.project_root() / "bench"))
import bench_gpu  # noqa: E402


@pytest.mark.slow
def test_tiny_form_runs_every_settings_file(isolated_dirs, capsys):
    assert bench_gpu.main(["--device", "cpu", "--workdir", str(isolated_dirs / "bench")]) == 0
    out = capsys.readouterr().out
    assert "On a CPU these figures mean nothing" in out and "tiny form" in out.splitlines()[0]
    rows = {line.split()[0]: line for line in out.splitlines() if line.split() and line.split()[0].endswith(".yaml")}
    assert sorted(rows) == bench_gpu.all_configs() and len(rows) == 8
    for name, line in rows.items():
        assert "FAILED" not in line, line
        for field in ("cpu batch 4", "epoch 2:", "compute:", "extract:", "peak RSS", "score:", "real size: n/a on CPU",
                      "estimate: epoch"):
            assert field in line, (name, field, line)
        assert ("@64px cse_resnet50" if name.startswith("clusterretri") else "@224px clip:ViT-B-32") in line


def test_real_epoch_and_validation_images_follow_the_published_sizes():
    from zssbir.config import TrainConfig
    import yaml

    def filed(name):
        return TrainConfig.from_dict(yaml.safe_load((paths.project_root() / "configs" / name).read_text()))

    real = bench_gpu.real_sizes("quickdraw_ext")
    assert real["train_photo"] == 204_000 - 54_151 and real["zero_sketch"] == 92_291 and real["unseen_classes"] == 30
    assert real["train_sketch"] + real["val_sketch"] == 330_000 - 92_291
    # ClusterRetri: 26 sketches + 52 photos a step, the shorter loader (the photos) ends the epoch
    assert bench_gpu.real_epoch_images(filed("clusterretri/quickdraw_ext.yaml"), real) == (149_849 // 52) * 78
    # DMWA: 32 quadruplets (128 images) a step, one quadruplet per training photo
    assert bench_gpu.real_epoch_images(filed("dmwa/quickdraw_ext.yaml"), real) == (149_849 // 32) * 128
    assert bench_gpu.validation_images(filed("clusterretri/quickdraw_ext.yaml"), real) == real["val_sketch"]
    assert bench_gpu.validation_images(filed("dmwa/quickdraw_ext.yaml"), real) == real["val_sketch"] + 149_849


def test_cuda_without_a_gpu_names_device_auto(capsys):
    assert bench_gpu.main(["--device", "cuda"]) == 2  # conftest hides CUDA
    err = capsys.readouterr().err
    assert "CUDA is not available" in err and "device: auto" in err
    assert bench_gpu.main(["--configs", "dmwa/nowhere.yaml"]) == 2
    assert "no settings file configs/dmwa/nowhere.yaml" in capsys.readouterr().err
