"""The hard miniature (issue 22, point 3): colours and fills drawn per photo, its own pretraining corpus and weights,
its claims beside the default's."""
import json

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import rgb_to_hsv

from zssbir import paths
from zssbir.config import MINIATURE_PRETRAININGS, TrainConfig
from zssbir.data.benchmarks import BENCHMARKS
from zssbir.data.synthetic import SyntheticConfig, instance_parts, render_instance
from zssbir.data.synthetic_classes import class_vocabulary
from zssbir.data.synthetic_pretrain import CORPORA, benchmark_captions, corpus_programs, render_corpus_photo
from zssbir.study import findings
from zssbir.training import pretrain as pt
from zssbir.training import pretrained_files as files
from zssbir.training.identity import run_name


def _hue_histograms(appearance: str, n_classes: int = 8, instances: int = 8):
    config = SyntheticConfig(n_classes=n_classes, n_unseen=3, instances_per_class=instances, sketches_per_photo=1,
                             image_size=32, appearance=appearance)
    X, y = [], []
    for program in class_vocabulary(n_classes, 0):
        for i in range(instances):
            hsv = rgb_to_hsv(np.asarray(render_instance(program, i, config)[0], dtype=float) / 255).reshape(-1, 3)
            hist, _ = np.histogram(hsv[hsv[:, 1] > 0.5, 0], bins=12, range=(0, 1))  # the saturated (object) pixels
            X.append(hist / max(1, hist.sum()))
            y.append(program.index)
    return np.array(X), np.array(y)


def _leave_one_out_nearest_centroid(X, y) -> float:
    hits = 0
    for i in range(len(y)):
        rest = np.arange(len(y)) != i
        centroids = {c: X[rest & (y == c)].mean(0) for c in np.unique(y)}
        hits += min(centroids, key=lambda c: np.abs(X[i] - centroids[c]).sum()) == y[i]
    return hits / len(y)


def test_colour_tells_the_class_on_the_default_and_not_on_the_hard_miniature():
    """A nearest-centroid classifier on the photos' hue histograms: well above chance (1/8) when the class sets the
    colours, near chance when each photo draws its own."""
    by_class = _leave_one_out_nearest_centroid(*_hue_histograms("class"))
    by_instance = _leave_one_out_nearest_centroid(*_hue_histograms("instance"))
    assert by_class > 0.5 and by_instance < 0.3, (by_class, by_instance)


def test_instances_share_shapes_not_dress_under_the_instance_rule():
    program = class_vocabulary(3, 0)[2]
    assert instance_parts(program, 0, 0, "class") == program.parts
    a, b = (instance_parts(program, i, 0, "instance") for i in (0, 1))
    geometry = [[(p.kind, p.x, p.y, p.w, p.h) for p in parts] for parts in (a, b, program.parts)]
    assert geometry[0] == geometry[1] == geometry[2]
    assert [(p.hue, p.fill) for p in a] != [(p.hue, p.fill) for p in b]
    assert instance_parts(program, 1, 0, "instance") == b  # seeded: the same instance is dressed the same way
    with pytest.raises(ValueError, match="appearance must be one of class, instance"):
        SyntheticConfig(appearance="random")


def test_the_hard_benchmark_is_sketchy_sized_in_unseen_classes_and_captions_only_shapes():
    hard = SyntheticConfig(**BENCHMARKS["synthetic_hard"].generator)
    default = SyntheticConfig(**BENCHMARKS["synthetic"].generator)
    assert hard.appearance == "instance" and default.appearance == "class"
    assert hard.n_unseen == 25 and hard.n_seen == default.n_seen  # as Sketchy-Ext; the same training data size
    names = [p.name for p in class_vocabulary(8, 0)]
    hard_captions = benchmark_captions("synthetic_hard_tiny", names)
    default_captions = benchmark_captions("synthetic_tiny", names)
    assert all("fills:" in c for c in default_captions) and not any("fills:" in c for c in hard_captions)
    assert [d.split("; fills:")[0] for d in default_captions] == hard_captions


def test_the_hard_corpus_follows_the_rule_and_stays_disjoint_from_every_benchmark():
    config = CORPORA["synthetic_pretrain_hard"]
    assert config.appearance == "instance" and CORPORA["synthetic_pretrain"].appearance == "class"
    small = type(config)(n_classes=3, instances_per_class=2, val_per_class=1, image_size=32, appearance="instance")
    program = corpus_programs(small)[0]
    hard = [np.asarray(render_corpus_photo(program, i, small), dtype=float) for i in (0, 1)]
    plain = type(config)(n_classes=3, instances_per_class=2, val_per_class=1, image_size=32)
    assert not np.array_equal(hard[0], np.asarray(render_corpus_photo(program, 0, plain), dtype=float))
    taken = {p.signature for p in class_vocabulary(55, 0)}  # every class of synthetic_hard
    assert not taken & {p.signature for p in corpus_programs(type(config)(n_classes=40))}


def test_a_run_names_the_pretraining_it_starts_from():
    """pretrain and pretrain_hard are different weights: runs from them never share a name (their content keys
    enter the digest), and each resolves to its own corpus's pretraining."""
    base = dict(method="clusterretri", dataset="synthetic_hard", backbone="small", image_size=48)
    default = TrainConfig(**base, pretrained="pretrain", teacher_weights="pretrain")
    hard = TrainConfig(**base, pretrained="pretrain_hard", teacher_weights="pretrain_hard")
    assert run_name(default) != run_name(hard)
    assert set(MINIATURE_PRETRAININGS.values()) <= set(CORPORA)
    with pytest.raises(ValueError, match="'pretrain_hard' names the small backbone's pretraining"):
        TrainConfig(**{**base, "backbone": "cse_resnet50"}, pretrained="pretrain_hard", lambda_kd=0.0)


@pytest.mark.parametrize("name", sorted(MINIATURE_PRETRAININGS))
def test_the_repository_keeps_each_pretraining_of_the_miniature(name):
    """data/pretrained/ holds the current folder of every named pretraining (checksums as recorded); a change to
    PRETRAIN_CODE or a corpus fails this until `make pretrain` rebuilds them (about 7 minutes each on 2 CPU cores)
    and `python -m zssbir.training.pretrain [--corpus C] --commit` copies them there."""
    from zssbir.models.named_weights import resolve_weights
    import zssbir.training.pretrained_store  # noqa: F401  (registers the names)

    settings = pt.PretrainSettings(corpus=MINIATURE_PRETRAININGS[name])
    folder = files.committed_dir(settings, pt.content_key(settings))
    assert files.is_finished(folder, settings), f"rebuild: {files.build_command(settings)} --commit"
    info = json.loads((folder / "pretrain.json").read_text())
    assert info["key"] == pt.content_key(settings)
    assert resolve_weights(name) in (str(folder / "backbone.pt"),
                                     str(files.output_dir(settings, info["key"]) / "backbone.pt"))


def test_committing_one_corpus_keeps_the_corpora_whose_names_extend_it(tmp_path, monkeypatch):
    monkeypatch.setenv("ZSSBIR_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("ZSSBIR_PRETRAINED", str(tmp_path / "kept"))
    settings = pt.PretrainSettings()
    for folder in (files.output_dir(settings, "0" * 16), paths.pretrained_dir() / f"synthetic_pretrain_{'1' * 16}",
                   paths.pretrained_dir() / f"synthetic_pretrain_hard_{'2' * 16}"):
        folder.mkdir(parents=True)
        for name in files.outputs(settings):
            (folder / name).write_bytes(b"x")
    files.commit(settings, "0" * 16)
    kept = sorted(p.name for p in paths.pretrained_dir().iterdir())
    assert kept == [f"synthetic_pretrain_{'0' * 16}", f"synthetic_pretrain_hard_{'2' * 16}"]




def test_claims_side_by_side_say_which_verdicts_change_with_the_benchmark():
    def table(**kw):
        base = {"claim": "L_DA improves retrieval", "difference": 0.05, "ci_low": 0.02, "ci_high": 0.08, "n": 5,
                "verdict": "supported", "fragile": False}
        other = {**base, "claim": "cluster-then-retrieve improves on exact retrieval"}
        return pd.DataFrame([base, {**other, **kw}])
    tables = {"synthetic": table(), "synthetic_hard": table(difference=0.004, ci_low=-0.01, ci_high=0.018,
                                                            verdict="not resolved")}
    side = findings.side_by_side(tables).set_index("claim")
    assert list(side.columns) == ["synthetic", "synthetic_hard"]
    assert side.at["cluster-then-retrieve improves on exact retrieval", "synthetic_hard"] == \
        "+0.004 [-0.010, +0.018] (5 seeds): not resolved"
    text = findings.side_by_side_sentences(tables)
    assert text[0].startswith("2 claims were tested on each of synthetic and synthetic_hard; 1 keeps its verdict")
    assert text[1] == ("\"cluster-then-retrieve improves on exact retrieval\" changes with the benchmark: synthetic "
                       "+0.050 (supported), synthetic_hard +0.004 (not resolved).")
    only = findings.side_by_side_sentences({"synthetic": table(), "synthetic_hard": pd.DataFrame()})
    assert only == ["Only synthetic has claims with results on both sides; synthetic_hard has none yet, so nothing "
                    "can be compared across benchmarks."]


def test_the_full_pipeline_trains_the_hard_miniature_before_05_from_its_own_pretraining():
    from zssbir.study.pipeline import load_pipeline

    steps = {s.name: (i, s) for i, s in enumerate(load_pipeline(paths.notebooks_dir() / "pipeline_full.yml"))}
    for name in ("01_train_hard", "04_dmwa_hard"):
        i, step = steps[name]
        assert i < steps["05_map_tables"][0]
        for params in (step.parameters, step.test_parameters):
            assert params["overrides"]["dataset"].startswith("synthetic_hard")
            assert params["overrides"]["pretrained"] == "pretrain_hard"


def test_the_readme_headline_shows_both_benchmarks_when_the_report_has_them():
    from zssbir.study.readme_headline import render

    headline = {"dataset": "synthetic", "conventions": {}, "markdown": "| a |\n|---|\n", "claims": ["c1"],
                "benchmarks_markdown": "| claim | synthetic | synthetic_hard |\n|---|---|---|\n| x | +0.1 | +0.0 |\n",
                "benchmark_sentences": ["1 claims were tested on each"]}
    text = render(headline, None, "make reports-full")
    assert "The same claims on both miniatures" in text and "| x | +0.1 | +0.0 |" in text
    assert "- 1 claims were tested on each" in text
    assert "both miniatures" not in render({**headline, "benchmarks_markdown": ""}, None)
    assert "- the runs were still improving" in render({**headline, "context": ["the runs were still improving"]}, None)


def test_the_full_pipeline_gives_the_default_claims_ten_seeds_and_refuses_a_bad_update(tmp_path):
    """make reports-full checks each default verdict on two disjoint halves: seeds 0-4 (make reports') and 5-9."""
    from zssbir.study.pipeline import load_pipeline

    base = {s.name: s for s in load_pipeline()}
    full = {s.name: s for s in load_pipeline(paths.notebooks_dir() / "pipeline_full.yml")}
    for name in ("01_train", "04_dmwa"):
        assert base[name].parameters["seeds"] == [0, 1, 2, 3, 4]
        assert full[name].parameters["seeds"] == list(range(10))
        assert {k: v for k, v in full[name].parameters.items() if k != "seeds"} == \
            {k: v for k, v in base[name].parameters.items() if k != "seeds"}
        assert full[name].test_parameters == base[name].test_parameters
    bad = tmp_path / "bad.yml"
    bad.write_text(f"extends: {paths.notebooks_dir() / 'pipeline.yml'}\nsteps:\n  - {{update: 01_train, after: x}}\n")
    with pytest.raises(ValueError, match="an update entry names a step of"):
        load_pipeline(bad)



def test_the_readme_quotes_the_committed_hard_pretraining_record():
    settings = pt.PretrainSettings(corpus="synthetic_pretrain_hard")
    info = json.loads((files.committed_dir(settings, pt.content_key(settings)) / "pretrain.json").read_text())
    last = info["history"][-1]
    readme = " ".join((paths.project_root() / "README.md").read_text().split())
    assert (f"records {len(info['history'])} epochs ending at held-out top-1 {last['val_top1']:.3f} by the class head "
            f"and {last['val_text_top1']:.3f} by the nearest class caption: with colour gone") in readme
