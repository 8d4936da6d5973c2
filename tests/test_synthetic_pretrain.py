"""The pretraining corpus (issue 13): disjoint from every benchmark class, deterministic, refuses overlaps."""
from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import pytest

from zssbir.data import synthetic_pretrain as sp
from zssbir.data.datasets import MissingDataError
from zssbir.data.synthetic_classes import class_vocabulary

TINY = sp.CORPORA["synthetic_pretrain_tiny"]


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_default_corpus_shares_no_class_program_with_any_benchmark():
    programs = sp.corpus_programs(sp.CORPORA["synthetic_pretrain"])
    bench = sp.benchmark_programs()
    assert {"synthetic", "synthetic_tiny"} <= set(bench)
    bench_all = [p for progs in bench.values() for p in progs]
    assert len(programs) == 300 and len(bench["synthetic"]) == 40  # seen and unseen classes alike
    # the programs themselves: main structure, and the parts drawn; then the names
    assert not {p.signature for p in programs} & {p.signature for p in bench_all}
    assert not {p.parts for p in programs} & {p.parts for p in bench_all}
    assert not {p.name for p in programs} & {p.name for p in bench_all}
    assert len({p.signature for p in programs}) == 300
    sp.check_disjoint(programs)  # does not raise
    # same part vocabulary: every part kind of the benchmark occurs in the corpus
    assert frozenset().union(*(p.part_kinds for p in bench_all)) <= frozenset().union(*(p.part_kinds for p in programs))


def test_check_disjoint_catches_a_reused_benchmark_program_under_another_name():
    programs = sp.corpus_programs(TINY)
    owl = sp.benchmark_programs()["synthetic"][7]
    reused = replace(owl, name="pt9999", index=99)  # the benchmark's class program, renamed
    with pytest.raises(sp.SharedClassesError, match=rf"pt9999 = .*synthetic:{owl.name}"):
        sp.check_disjoint(programs + [reused])


def test_corpus_sharing_benchmark_classes_is_refused_with_the_shared_names(tmp_path):
    asked = class_vocabulary(TINY.n_classes, 0)  # "more classes of the benchmark's own generator"
    with pytest.raises(sp.SharedClassesError) as err:
        sp.generate_corpus(tmp_path / "corpus", TINY, programs=asked)
    text = str(err.value)
    assert "refused" in text and f"share {TINY.n_classes} of its" in text
    for p in asked[:8]:  # synthetic_tiny's 8 classes are the first 8 of the same stream
        assert f"synthetic_tiny:{p.name}" in text and f"synthetic:{p.name}" in text
    assert not (tmp_path / "corpus").exists()


def test_corpus_is_deterministic_by_seed_and_photos_only(tmp_path):
    a = sp.generate_corpus(tmp_path / "a", TINY)
    b = sp.generate_corpus(tmp_path / "b", TINY, workers=2)
    assert a == b and _digest(tmp_path / "a") == _digest(tmp_path / "b")
    other = sp.generate_corpus(tmp_path / "c", replace(TINY, seed=1))
    assert [c["description"] for c in other["classes"]] != [c["description"] for c in a["classes"]]
    photos = [{k: v for k, v in _digest(tmp_path / r).items() if k.endswith(".jpg")} for r in ("a", "c")]
    assert not set(photos[0].values()) & set(photos[1].values())
    program = sp.corpus_programs(TINY)[0]  # the seed also draws each instance's pose and photo
    assert sp.render_corpus_photo(program, 0, TINY).tobytes() != \
        sp.render_corpus_photo(program, 0, replace(TINY, seed=1)).tobytes()
    files = [p for p in (tmp_path / "a" / "photo").rglob("*") if p.is_file()]
    assert len(files) == TINY.n_classes * TINY.instances_per_class and all(p.suffix == ".jpg" for p in files)
    assert a["counts"] == {"train": 48, "val": 12, "classes": 12}


def test_ensure_corpus_generates_once_and_loads(isolated_dirs, monkeypatch):
    with pytest.raises(MissingDataError, match="zssbir data generate synthetic_pretrain_tiny"):
        sp.load_corpus(sp.corpus_root("synthetic_pretrain_tiny"), corpus_id="synthetic_pretrain_tiny")
    root = sp.ensure_corpus("synthetic_pretrain_tiny")
    assert root == isolated_dirs / "data" / "synthetic_pretrain_tiny"
    monkeypatch.setattr(sp, "generate_corpus", lambda *a, **k: pytest.fail("generated again"))
    assert sp.ensure_corpus("synthetic_pretrain_tiny") == root
    train, val = sp.load_corpus(root, "train"), sp.load_corpus(root, "val")
    assert len(train) == 48 and len(val) == 12 and sorted(set(val.labels)) == list(range(12))
    item = train[0]
    assert item["image"].mode == "RGB" and item["image"].size == (32, 32) and item["domain"] == 1
    with pytest.raises(ValueError, match="unknown pretraining corpus"):
        sp.ensure_corpus("synthetic")


def test_generate_command_builds_a_corpus(isolated_dirs, capsys):
    from zssbir.cli import main

    assert main(["data", "generate", "synthetic_pretrain_tiny"]) == 0
    root = isolated_dirs / "data" / "synthetic_pretrain_tiny"
    assert f"synthetic_pretrain_tiny is ready at {root}" in capsys.readouterr().out
    assert sp.load_manifest(root)["config"] == TINY.to_dict()
