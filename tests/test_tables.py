"""zssbir.study.tables from fabricated results files, and zssbir.study.published_numbers against methods.md part C."""
import pandas as pd
import pytest

from zssbir.study import published_numbers, tables
from zssbir.eval.metrics import PRESETS
from zssbir.study.results import write_results

METRICS = ("map@all", "prec@100")


def _conv(metric, preset="clusterretri", ties="stable", **override):
    p = {**PRESETS[preset], **override}
    specific = ({"ap": p["ap"], "map_k_denominator": p["map_k_denominator"]} if metric.startswith("map")
                else {"prec_k_denominator": p["prec_k_denominator"]})
    return {"metric": metric.split("@")[0], **specific, "average": p["average"], "ties": ties, "preset": preset}


def _write(folder, name, seed, values, *, method="clusterretri", lambda_da=0.1, retrieval=None, dataset="synthetic",
           label=None, ties="stable", protocol=None, pretrained=None, **override):
    params = {"train": {"method": method, "backbone": "small", "lambda_da": lambda_da, "seed": seed,
                        "pretrained": pretrained},
              "retrieval": retrieval or {"kind": "exact", "metric": "cosine"}, "method": method, "dataset": dataset}
    if protocol:
        params["protocol"] = protocol
    if label:
        params["label"] = label
    metrics = {m: {"value": v, "convention": _conv(m, ties=ties, **override)} for m, v in zip(METRICS, values)}
    write_results(name, params=params, metrics=metrics, seed=seed, out_dir=folder, device="cpu")


CLUSTER = {"kind": "cluster", "M": 2, "K": 16, "variant": "rerank"}


@pytest.fixture
def study(tmp_path):
    """Three seeds of the baseline and ClusterRetri (exact and cluster), and one DMWA run with a label."""
    for seed in range(3):
        _write(tmp_path, f"base_s{seed}__exact", seed, (0.30 + 0.01 * seed, 0.20), lambda_da=0.0)
        _write(tmp_path, f"cr_s{seed}__exact", seed, (0.40 + 0.02 * seed, 0.25))
        _write(tmp_path, f"cr_s{seed}__cluster", seed, (0.50, 0.30), retrieval=CLUSTER, ties="secondary")
    _write(tmp_path, "dmwa_s0__exact", 0, (0.6, 0.35), method="dmwa", lambda_da=0.0,
           label="DMWA (both weights, quadruplet)")
    return tmp_path


def test_study_table_rows_values_and_conventions(study):
    frame = tables.study_frame(study)
    table = tables.study_table(frame, "synthetic", METRICS)
    assert list(table.index) == ["exact retrieval baseline (no L_DA)", "ClusterRetri L_DA 0.1, exact",
                                 "ClusterRetri L_DA 0.1, cluster M=2 K=16 rerank",
                                 "DMWA (both weights, quadruplet)", tables.CONVENTION_ROW]
    assert table.at["ClusterRetri L_DA 0.1, exact", "map@all"] == "0.4200 ± 0.0200"
    assert table.at["ClusterRetri L_DA 0.1, exact", "seeds"] == "3"
    assert table.at["DMWA (both weights, quadruplet)", "prec@100"] == "0.3500"
    assert table.at["DMWA (both weights, quadruplet)", "seeds"] == "1"
    assert table.at["ClusterRetri L_DA 0.1, cluster M=2 K=16 rerank", "ties"] == "secondary"
    conv = table.loc[tables.CONVENTION_ROW]
    assert conv["map@all"] == "ap=voc, map_k_denominator=min_k_relevant, average=class"
    assert conv["prec@100"] == "prec_k_denominator=min_k_gallery, average=class"
    assert "0.6000" in tables.to_markdown(table)


def test_a_row_says_its_seeds_once_or_per_cell_when_its_metrics_differ(study):
    frame = tables.study_frame(study)
    row = "ClusterRetri L_DA 0.1, exact"
    frame = frame[~((frame["row"] == row) & (frame["metric"] == "prec@100") & (frame["seed"] == 2))]
    table = tables.study_table(frame, "synthetic", METRICS)
    assert table.at[row, "seeds"] == "per cell"
    assert table.at[row, "map@all"] == "0.4200 ± 0.0200 (3 seeds)" and table.at[row, "prec@100"].endswith("(2 seeds)")
    assert table.at["exact retrieval baseline (no L_DA)", "seeds"] == "3"


def test_mixed_conventions_are_named(study):
    _write(study, "dmwa_s1__exact", 1, (0.7, 0.4), method="dmwa", lambda_da=0.0, preset="zse_sbir",
           label="DMWA (no weights, triplet)")
    table = tables.study_table(tables.study_frame(study), "synthetic", METRICS)
    mixed = table.at[tables.CONVENTION_ROW, "prec@100"]
    assert mixed.startswith("MIXED: ")
    assert "prec_k_denominator=min_k_relevant, average=query [DMWA (no weights, triplet)]" in mixed
    assert "prec_k_denominator=min_k_gallery, average=class [exact retrieval baseline (no L_DA), " in mixed


def test_label_shared_by_procedures_and_duplicate_seeds(study):
    _write(study, "dmwa_s0__cluster", 0, (0.65, 0.36), method="dmwa", retrieval=CLUSTER, ties="secondary",
           label="DMWA (both weights, quadruplet)")
    rows = list(tables.study_table(tables.study_frame(study), "synthetic", METRICS).index)
    assert "DMWA (both weights, quadruplet), exact" in rows
    assert "DMWA (both weights, quadruplet), cluster M=2 K=16 rerank" in rows
    _write(study, "cr_s0_again__exact", 0, (0.1, 0.1))
    with pytest.raises(ValueError, match="same row and seed.*cr_s0_again__exact"):
        tables.study_table(tables.study_frame(study), "synthetic", METRICS)


def test_no_results_says_what_writes_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="01_train.*make reports"):
        tables.study_frame(tmp_path / "results")


MINE = "this study, on {} (authors' lists, as the published numbers)"


def test_study_vs_published_blocks(study):
    _write(study, "cr_real_s0__exact", 0, (0.55, 0.65), dataset="sketchy_ext_split1", protocol="authors")
    _write(study, "cr_tub_clean_s0__exact", 0, (0.45, 0.55), dataset="tuberlin_ext", protocol="clean")
    out = tables.study_vs_published(tables.study_frame(study), "synthetic", METRICS)
    blocks = list(dict.fromkeys(out["block"]))
    assert blocks[:3] == ["this study, on synthetic", "published, on tuberlin_ext", MINE.format("tuberlin_ext")]
    note = out[out["block"] == MINE.format("tuberlin_ext")]
    assert len(note) == 1 and note["row"].iloc[0].startswith("no results of this study on tuberlin_ext under the "
                                                             "authors protocol")
    assert "1 results files use other lists and are not compared" in note["row"].iloc[0]
    none = out[out["block"] == MINE.format("quickdraw_ext")]
    assert none["row"].iloc[0].startswith("no results of this study on quickdraw_ext yet")
    published = out[out["block"] == "published, on sketchy_ext_split1"].set_index("row")
    assert published.at["SAKE", "map@all"] == "0.547" and "Table 1" in published.at["SAKE", "source"]
    assert published.at["ClusterRetri (SAKE features + L_DA), cluster M=2 K=32 (best)", "prec@100"] == "0.7421"
    mine = out[out["block"] == MINE.format("sketchy_ext_split1")].set_index("row")
    assert mine.at["ClusterRetri L_DA 0.1, exact", "map@all"] == "0.5500"
    assert mine.at["ClusterRetri L_DA 0.1, exact", "source"] == "this study: results files (1 seed)"
    assert "ties=stable" in mine.at["ClusterRetri L_DA 0.1, exact", "convention"]


def test_both_protocols_of_a_benchmark_stand_side_by_side(study):
    for protocol, value in (("authors", 0.6), ("clean", 0.55)):
        _write(study, f"cr_{protocol}_s0__exact", 0, (value, 0.7), dataset="sketchy_ext_split1", protocol=protocol)
    rows = tables.study_table(tables.study_frame(study), "sketchy_ext_split1", METRICS)
    assert rows.at["ClusterRetri L_DA 0.1, exact, authors lists", "map@all"] == "0.6000"
    assert rows.at["ClusterRetri L_DA 0.1, exact, clean lists", "map@all"] == "0.5500"
    assert not any("lists" in r for r in tables.study_table(tables.study_frame(study), "synthetic", METRICS).index)


def test_headline_and_written_tables(study, tmp_path):
    frame = tables.study_frame(study)
    head = tables.headline(frame, "synthetic", METRICS)
    first = head["rows"][0]
    assert first["row"] == "exact retrieval baseline (no L_DA)"
    assert first["metrics"]["map@all"]["mean"] == pytest.approx(0.31) and first["metrics"]["map@all"]["seeds"] == 3
    assert len(head["results_files"]) == 10
    csv, md = tables.write_table(tables.study_table(frame, "synthetic", METRICS), tmp_path / "t", "study")
    assert pd.read_csv(csv).shape == (5, 5)  # row, two metrics, seeds, ties
    assert md.read_text().splitlines()[1] == "|---|---|---|---|---|"


def test_reference_numbers_match_methods_md():
    ref = published_numbers.reference_frame().set_index(["method", "variant", "dataset", "metric"])["value"]
    assert ref[("SAKE", "", "sketchy_ext_split1", "map@all")] == 0.547
    assert ref[("ZSE-SBIR (Ret)", "", "tuberlin_ext", "prec@100")] == 0.637
    assert ref[("BDA-SketRet", "", "sketchy_ext_split2", "map@200")] == 0.556
    assert ref[("ZSE-SBIR (RN)", "", "quickdraw_ext", "prec@200")] == 0.216
    cr = "ClusterRetri (SAKE features + L_DA)"
    assert ref[(cr, "cluster M=2 K=32 (best)", "sketchy_ext_split1", "map@all")] == 0.7690
    assert ref[(cr, "cluster M=2 K=32, fuse 0.2 (best)", "sketchy_ext_split1", "prec@100")] == 0.7602
    assert ref[("SAKE", "exact retrieval, no clustering", "tuberlin_ext", "prec@100")] == 0.599
    assert ("DSN", "", "quickdraw_ext", "map@200") not in ref.index  # "-" in the paper's table


def test_reference_rows_name_source_and_convention():
    frame = published_numbers.reference_frame()
    assert frame["source"].str.len().gt(0).all() and frame["convention"].str.len().gt(0).all()
    assert set(frame["dataset"]) == set(published_numbers.DATASETS)
    assert set(frame["preset"].dropna()) <= set(PRESETS)
    for dataset, rows in frame.groupby("dataset"):
        assert set(rows["metric"]) == set(published_numbers.CUSTOMARY_METRICS[dataset])
    with pytest.raises(ValueError, match="no published numbers"):
        published_numbers.reference_frame("synthetic")


def test_chance_rows_are_results_files_in_the_table(isolated_dirs):
    from zssbir.data.tools import ensure_dataset
    from zssbir.study.scoring import CHANCE_LABEL, record_chance

    ensure_dataset("synthetic_tiny")
    out = isolated_dirs / "results"
    paths_written = record_chance("synthetic_tiny", seeds=3, out_dir=out)
    assert len(paths_written) == 3
    frame = tables.study_frame(out)
    chance = frame[frame["row"] == CHANCE_LABEL]
    # 3 unseen classes of 6 photos: the whole gallery (18) is inside the top 100, a third of it relevant
    assert chance.loc[chance["metric"] == "prec@100", "value"].tolist() == pytest.approx([1 / 3] * 3)
    maps = chance.loc[chance["metric"] == "map@all", "value"]
    assert maps.nunique() == 3 and (maps > 1 / 3).all() and (maps < 0.7).all()  # AP of a random order exceeds n/N
    table = tables.study_table(frame, "synthetic_tiny")
    assert table.loc[CHANCE_LABEL, "seeds"] == "3" and " ± " in table.loc[CHANCE_LABEL, "map@all"]


def test_scratch_rows_are_named_only_beside_pretrained_ones(study, tmp_path):
    assert not tables.study_frame(study)["row"].str.contains("scratch").any()  # one start: no suffix
    for seed in range(2):
        _write(study, f"pre_s{seed}__exact", seed, (0.6, 0.4), lambda_da=0.0, pretrained="pretrain")
    frame = tables.study_frame(study)
    rows = set(frame["row"])
    assert "exact retrieval baseline (no L_DA)" in rows and "exact retrieval baseline (no L_DA), from scratch" in rows
    assert set(frame.loc[frame["row"].str.endswith("from scratch"), "name"].str[:3]) == {"bas", "cr_", "dmw"}
    other = tmp_path / "other"
    _write(other, "a__exact", 0, (0.6, 0.4), pretrained="pretrain")
    _write(other, "chance_x_seed0", 0, (0.1, 0.1), method="chance")
    assert not tables.study_frame(other)["row"].str.contains("scratch").any()
