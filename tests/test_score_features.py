"""Scoring what others release: `zssbir score FILE` writes results files that name their source and stand in the
study's tables beside the published numbers; user mistakes are one line and exit code 2; a run's exported features
score exactly as the run itself, in every layout."""
import hashlib
import pickle

import numpy as np
import pytest

from zssbir import cli
from zssbir.data import feature_files
from zssbir.study import released, scoring, tables
from zssbir.study.results import load_results, results_frame
from zssbir.training.config import TrainConfig
from zssbir.training.loop import load_trained, train

TINY = dict(dataset="synthetic_tiny", image_size=32, embed_dim=32, batch_size=12, epochs=1, max_steps_per_epoch=2,
            backbone_params={"width": 32, "depth": 1, "heads": 2, "stem_channels": (8, 16, 32)})


def fabricated(path, classes=4, n_query=40, n_gallery=60, dim=16, seed=0):
    """A ClusterRetri-layout pickle of clustered features: classes are separable, so scores beat chance."""
    rng = np.random.default_rng(seed)
    ql, gl = np.arange(n_query) % classes, np.arange(n_gallery) % classes
    centres = 3 * rng.normal(size=(classes, dim))
    q = (centres[ql] + rng.normal(size=(n_query, dim))).astype(np.float32)
    g = (centres[gl] + rng.normal(size=(n_gallery, dim))).astype(np.float32)
    with open(path, "wb") as fh:
        pickle.dump([g, gl.astype(np.int64), q, ql.astype(np.int64), None], fh)
    return path


def by_name(folder):
    return {r["name"]: r for r in load_results(folder)}


def test_score_command_writes_results_that_name_their_source_and_stand_in_the_tables(isolated_dirs, capsys):
    path = fabricated(isolated_dirs / "features.pickle")
    assert cli.main(["score", str(path), "--cluster", "2", "4", "rerank", "--kmeans-seeds", "2", "--itq", "8",
                     "--chance-seeds", "2", "--dataset", "sketchy_ext_split1", "--label", "their release"]) == 0
    out = capsys.readouterr().out
    for word in ("exact", "cluster", "itq", "chance", "map@all", "40 queries, 60 gallery items, 16 dimensions"):
        assert word in out
    folder = isolated_dirs / "runs" / "results"
    records = by_name(folder)
    stem = f"released_features_{hashlib.sha256(path.read_bytes()).hexdigest()[:8]}"
    assert set(records) == {f"{stem}__{k}" for k in ("exact", "cluster", "itq", "chance_seed0", "chance_seed1")}
    exact = records[f"{stem}__exact"]["params"]
    assert exact["source"] == {"sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "layout": "clusterretri",
                               "file": "features.pickle", "n_query": 40, "n_gallery": 60, "dim": 16, "n_classes": 4}
    assert exact["method"] == "released" and exact["dataset"] == "sketchy_ext_split1"
    assert exact["label"] == "their release, exact" and exact["retrieval"]["kind"] == "exact"
    assert records[f"{stem}__cluster"]["params"]["retrieval"] == {"kind": "cluster", "M": 2, "K": 4,
                                                                   "variant": "rerank", "kmeans_seeds": 2}
    assert records[f"{stem}__itq"]["params"]["retrieval"] == {"kind": "itq", "bits": 8, "seed": 0, "ties": "random"}
    assert records[f"{stem}__chance_seed1"]["params"]["method"] == "chance"
    assert {r["metrics"]["prec@100"]["convention"]["preset"] for r in records.values()} == {"clusterretri"}
    values = {k: records[f"{stem}__{k}"]["metrics"]["map@all"]["value"] for k in ("exact", "cluster", "chance_seed0")}
    assert values["exact"] > values["chance_seed0"] + 0.3 and values["cluster"] > values["chance_seed0"] + 0.3

    # the study's tables: in the frame, and in the block beside the published Sketchy-Ext split-1 numbers
    frame = tables.study_frame(folder)
    assert set(frame.loc[frame["method"] == "released", "row"]) == {
        "their release, exact", "their release, cluster M=2 K=4 rerank", "their release, ITQ 8 bits"}
    side = tables.study_vs_published(frame, "synthetic")
    block = side[side["block"].str.startswith("this study, on sketchy_ext_split1")]
    assert "their release, exact" in set(block["row"]) and "chance (random ranking), their release" in set(block["row"])
    mine = released.released_vs_published(folder)
    assert list(mine["block"].unique()) == ["released features, on sketchy_ext_split1",
                                            "published, on sketchy_ext_split1"]
    rows = mine[mine["block"].str.startswith("released")]
    assert list(rows["row"])[0] == "their release, exact" and list(rows["row"])[-1].startswith("chance")
    assert rows["source"].str.contains("features.pickle").all()
    assert "0.769" in set(mine["map@all"])  # the authors' number, one block below


def test_chance_of_labels_is_the_chance_level_of_a_data_set():
    """From label arrays, the same numbers as scoring.chance_metrics computes from a data set's lists."""
    rng = np.random.default_rng(1)
    ql, gl = rng.integers(0, 5, 30), np.repeat(np.arange(5), 7)
    from zssbir.eval.metrics import evaluate

    want = evaluate(np.zeros((30, 35), np.float32), ql, gl, preset="clusterretri", ties="random", seed=3)
    got = released.chance_of_labels(ql, gl, 3)
    assert {k: v.value for k, v in got.items()} == {k: v.value for k, v in want.items()}


def bad_files(folder):
    rng = np.random.default_rng(0)
    q, g = rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=(6, 3)).astype(np.float32)
    ql, gl = np.array([0, 1, 0, 1]), np.array([0, 1, 0, 1, 0, 1])
    nan = q.copy()
    nan[2, 0] = np.nan

    class Hostile:
        def __reduce__(self):
            return open, (str(folder / "pwned"), "w")

    files = {"six.pickle": [g, gl, q, ql, None, None], "nan.pickle": [g, gl, nan, ql, None],
             "hostile.pickle": [g, gl, q, ql, Hostile()], "wide.pickle": [g[:, :2], gl, q, ql, None],
             "nogallery.pickle": [g, np.zeros(6, np.int64), q, ql, None]}
    for name, obj in files.items():
        with open(folder / name, "wb") as fh:
            pickle.dump(obj, fh)
    return files


@pytest.mark.parametrize("args, message", [
    (["six.pickle"], "found a list of 6 items"),
    (["nan.pickle"], "query features row 2 is not finite"),
    (["hostile.pickle"], "refused to unpickle global io.open"),
    (["wide.pickle"], "differ in width: 3 and 2"),
    (["nogallery.pickle"], "query class 1 has no gallery item"),
    (["missing.pickle"], "no features file"),
    (["nan.pickle", "--layout", "hdf5"], "unknown layout 'hdf5'"),
    (["six.pickle", "--layout", "clusterretri"], "layout clusterretri is a pickled list of 5 items"),
    (["nan.pickle", "--cluster", "2", "K", "rerank"], "--cluster takes M K VARIANT with integers"),
])
def test_user_mistakes_are_one_line_and_exit_code_2(isolated_dirs, capsys, monkeypatch, args, message):
    monkeypatch.chdir(isolated_dirs)
    bad_files(isolated_dirs)
    assert cli.main(["score", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (isolated_dirs / "pwned").exists()
    assert not list((isolated_dirs / "runs").rglob("*.json"))  # nothing written


def test_a_run_s_exported_features_score_exactly_as_the_run(isolated_dirs, capsys):
    run = isolated_dirs / "runs" / "train" / "tiny"
    train(TrainConfig(**TINY), run_dir=run, progress=False)
    model, config = load_trained(run)
    cluster = (2, 3, "rerank")
    want = {k: load_results(p)[0]["metrics"] for k, p in
            scoring.score_and_record(model, config, "tiny", cluster=cluster, kmeans_seeds=2).items()}
    chance = scoring.chance_metrics(config.dataset, 0, duplicates=config.list_duplicates)
    for layout in feature_files.LAYOUTS:
        path = isolated_dirs / f"tiny.{layout}"
        if layout == "npz":  # through the command line once
            assert cli.main(["export-features", str(run), str(path), "--format", layout]) == 0
        else:
            released.export_run_features(run, path, layout)
        read = feature_files.read_features(path)
        assert read.layout == layout
        assert (read.class_names is not None) == (layout == "npz")
        written = released.score_features_file(path, cluster=cluster, kmeans_seeds=2, chance_seeds=1,
                                               out_dir=isolated_dirs / layout)
        got = {k: load_results(p)[0]["metrics"] for k, p in written.items()}
        for procedure in ("exact", "cluster"):
            assert {m: v["value"] for m, v in got[procedure].items()} == \
                   {m: v["value"] for m, v in want[procedure].items()}, (layout, procedure)
        assert got["cluster"]["map@all"]["per_kmeans_seed"] == want["cluster"]["map@all"]["per_kmeans_seed"]
        assert {m: v["value"] for m, v in got["chance_seed0"].items()} == {m: v.value for m, v in chance.items()}
    paths_ = scoring.score_and_record(model, config, "tiny", cluster=cluster, kmeans_seeds=2).values()
    table = released.round_trip(run, list(paths_), isolated_dirs / "rt.pickle", out_dir=isolated_dirs / "rt")
    assert set(table["procedure"]) == {"exact", "cluster"} and len(table) == 8 and table["equal"].all()
    assert cli.main(["export-features", str(run), str(isolated_dirs / "x"), "--format", "hdf5"]) == 2
    assert "unknown --format 'hdf5'" in capsys.readouterr().err
