"""Issue 12, points 7, 8 and 10 on the command line: `python -m zssbir` is the `zssbir` command; `zssbir train --set
method=dmwa` takes DMWA's defaults; `zssbir evaluate` prints the chance level beside the scores."""
import os
import subprocess
import sys

import torch

from zssbir import paths
from zssbir.cli import main
from zssbir.study.scoring import chance_metrics
from zssbir.training.config import TrainConfig
from zssbir.training.loop import train

TINY_SET = ["dataset=synthetic_tiny", "image_size=32", "embed_dim=32", "epochs=1", "max_steps_per_epoch=2",
            "backbone_params={width: 32, depth: 1, heads: 2, stem_channels: [8, 16, 32]}"]


def _run(module, *args, env):
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=120,
                          env=env, cwd=env["ZSSBIR_DATA"])


def test_python_dash_m_zssbir_is_the_zssbir_command(isolated_dirs):
    env = {**os.environ, "PYTHONPATH": str(paths.project_root() / "lib") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for args in (["--help"], ["data", "prepare", "tuberlin_ext", "--source", str(isolated_dirs / "nothere.zip")]):
        package, cli = _run("zssbir", *args, env=env), _run("zssbir.cli", *args, env=env)
        assert (package.returncode, package.stdout, package.stderr) == (cli.returncode, cli.stdout, cli.stderr)
        assert "is a package and cannot be directly executed" not in package.stderr
    assert package.returncode == 2 and "nothere.zip does not exist" in package.stderr
    assert _run("zssbir", "--help", env=env).stdout.startswith("usage: zssbir ")


def test_train_with_method_dmwa_takes_its_defaults(isolated_dirs, capsys):
    run = isolated_dirs / "dmwa"
    assert main(["train", "--set", "method=dmwa", "batch_size=16", *TINY_SET, "--run-dir", str(run), "--quiet"]) == 0
    assert "trained" in capsys.readouterr().out
    config = torch.load(run / "checkpoint.pt", weights_only=False)["config"]
    assert config["method"] == "dmwa" and config["lambda_da"] == 0.0


def test_evaluate_prints_the_chance_level_beside_the_scores(isolated_dirs, capsys):
    run = isolated_dirs / "runs" / "train" / "tiny"
    config = TrainConfig(dataset="synthetic_tiny", image_size=32, embed_dim=32, epochs=1, max_steps_per_epoch=2,
                         batch_size=12, backbone_params={"width": 32, "depth": 1, "heads": 2, "stem_channels": (8, 16, 32)})
    train(config, run_dir=run, progress=False)
    assert main(["evaluate", str(run)]) == 0
    lines = capsys.readouterr().out.splitlines()
    exact = next(line for line in lines if line.startswith("exact "))
    chance = next(line for line in lines if line.startswith("chance "))
    expected = chance_metrics("synthetic_tiny", 0)
    assert f"map@all {expected['map@all'].value:.4f}" in chance and "random ranking" in chance
    assert [w for w in exact.split() if w.startswith(("map", "prec"))] == \
        [w for w in chance.split() if w.startswith(("map", "prec"))]  # the same metrics, side by side
    assert main(["evaluate", str(run), "--no-chance"]) == 0
    assert "chance" not in capsys.readouterr().out
