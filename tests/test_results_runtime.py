import json
import math

import numpy as np
import pytest
import torch

from zssbir import paths
from zssbir.study.results import load_results, write_results
from zssbir.runtime import resolve_device, seed_everything

CONV = {"ap": "voc", "average": "class"}


def test_results_json_records_everything(isolated_dirs):
    path = write_results("run_a", params={"lr": 1e-4, "root": paths.data_dir()}, seed=3, convention=CONV,
                         metrics={"map@all": np.float32(0.5), "prec@100": {"value": 0.25, "convention": {"k": 100}}})
    assert path == isolated_dirs / "runs" / "results" / "run_a.json"
    record = json.loads(path.read_text())
    assert record["metrics"]["map@all"] == {"value": 0.5, "convention": CONV}
    assert record["metrics"]["prec@100"]["convention"] == {"k": 100}
    assert record["seed"] == 3 and record["meta"]["device"] == "cpu"
    assert torch.__version__.startswith(record["meta"]["versions"]["torch"])
    assert "git_commit" in record["meta"]
    assert [r["name"] for r in load_results(isolated_dirs / "runs" / "results")] == ["run_a"]


def test_results_refuse_nan_and_missing_convention(isolated_dirs):
    with pytest.raises(ValueError, match="non-finite"):
        write_results("bad", params={}, seed=0, convention=CONV, metrics={"map@all": math.nan})
    with pytest.raises(ValueError, match="no convention"):
        write_results("bad", params={}, seed=0, metrics={"map@all": 0.3})
    with pytest.raises(ValueError, match="plain file stem"):
        write_results("../x", params={}, seed=0, convention=CONV, metrics={})
    assert not (isolated_dirs / "runs" / "results" / "bad.json").exists()


def test_load_rejects_foreign_json(tmp_path):
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ValueError, match="not a zssbir results file"):
        load_results(tmp_path)


def test_paths_follow_environment(isolated_dirs):
    assert paths.reports_dir() == isolated_dirs / "reports"
    assert paths.cache_dir() == isolated_dirs / "cache"
    assert (paths.project_root() / "pyproject.toml").is_file()


def test_seed_helper_reproduces_all_generators():
    g = seed_everything(7)
    a = (np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=g).item())
    g = seed_everything(7)
    assert a == (np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=g).item())
    with pytest.raises(ValueError):
        seed_everything(-1)


def test_device_auto_is_cpu_here_and_cuda_request_is_checked():
    assert resolve_device("auto").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            resolve_device("cuda")


def test_results_frame_and_summary_over_seeds(isolated_dirs):
    from zssbir.study.results import results_frame, summary_table

    for seed, value in ((0, 0.2), (1, 0.4), (2, 0.6)):
        write_results(f"r{seed}", params={"method": "m", "dataset": "d", "train": {"lambda_da": 0.1},
                                          "retrieval": {"kind": "exact"}},
                      seed=seed, convention=CONV, metrics={"map@all": value})
    frame = results_frame(load_results(isolated_dirs / "runs" / "results"))
    assert len(frame) == 3 and set(frame["convention"]) == {"ap=voc, average=class"}
    table = summary_table(frame, ["method", "retrieval"])
    assert table[("mean", "map@all")].iloc[0] == pytest.approx(0.4)
    assert table[("std", "map@all")].iloc[0] == pytest.approx(0.2)
    assert table[("seeds", "map@all")].iloc[0] == 3
    from zssbir.study.results import mean_std_text
    assert mean_std_text(table, digits=2).iloc[0, 0] == "0.40 ± 0.20 (3)"
    assert mean_std_text(table, digits=2, unit="seed").iloc[0, 0] == "0.40 ± 0.20 (3 seeds)"
    assert mean_std_text(table, digits=2, count=False).iloc[0, 0] == "0.40 ± 0.20"
