"""Published reference numbers (shared reference ``methods.md``, parts A and C), as data.

These are the ONLY typed result numbers of the study: what other papers and the ClusterRetri
authors' released logs report, each with its source and the metric convention it was computed
under (as far as known; the preset names are those of ``zssbir.eval.metrics.PRESETS``). Tables put them
beside the study's own numbers, which always come from results files.

Conventions. The ZSE-SBIR table collects numbers that each paper computed with its own code:
ZSE-SBIR's own rows use its ``utils/ap.py`` (preset ``zse_sbir``; by default that code scores a
subsample of the test set unless run with ``--testall``, and the paper does not say which), SAKE's
and DSN's code is preset ``sake``; for the other rows the convention is not known. The ClusterRetri
log numbers come from its SAKE-derived evaluation (preset ``clusterretri``, class mean). All of
them leave ties to numpy's unstable argsort.
"""
from __future__ import annotations

DATASETS = ("tuberlin_ext", "sketchy_ext_split1", "sketchy_ext_split2", "quickdraw_ext")
DATASET_NAMES = {"tuberlin_ext": "TU-Berlin-Ext", "sketchy_ext_split1": "Sketchy-Ext split 1",
                 "sketchy_ext_split2": "Sketchy-Ext split 2", "quickdraw_ext": "QuickDraw-Ext"}
# the metrics each benchmark customarily reports (benchmarks.md, section 6)
CUSTOMARY_METRICS = {"tuberlin_ext": ("map@all", "prec@100"), "sketchy_ext_split1": ("map@all", "prec@100"),
                     "sketchy_ext_split2": ("map@200", "prec@200"), "quickdraw_ext": ("map@200", "prec@200")}

ZSE_SBIR_SOURCE = "ZSE-SBIR paper (Lin et al., CVPR 2023), Table 1"
CLUSTERRETRI_SOURCE = "ClusterRetri released logs (github curiosity654/ClusterRetr), Sketchy split 1"
SAKE_QUOTED_SOURCE = "SAKE baseline as quoted beside the ClusterRetri numbers (methods.md part A)"

_MIXED = "as published by each method's paper (mixed code bases; not stated in the table)"
_TIES = "; ties: numpy unstable argsort"
CONVENTIONS = {
    "zse_sbir": "zse_sbir preset: VOC AP, mAP@K / min(K, #relevant), Prec@K / min(K, #relevant), query mean"
                + _TIES + "; possibly a test subsample (ZSE-SBIR code default)",
    "sake": "sake preset: VOC AP, mAP@K / min(K, #relevant), Prec@K / min(K, gallery), class mean" + _TIES,
    "clusterretri": "clusterretri preset: VOC AP, mAP@K / min(K, #relevant), Prec@K / min(K, gallery), class mean"
                    + _TIES,
    None: _MIXED,
}

# ZSE-SBIR Table 1: (method, preset or None) -> per data set (first metric, second metric); None = "-"
_ZSE_SBIR_TABLE = {
    ("SAKE", "sake"): ((0.475, 0.599), (0.547, 0.692), (0.497, 0.598), (0.130, 0.179)),
    ("DSN", "sake"): ((0.484, 0.591), (0.583, 0.704), None, None),
    ("PDFD", None): ((0.483, 0.600), (0.661, 0.781), None, None),
    ("TVT", None): ((0.484, 0.662), (0.648, 0.796), (0.531, 0.618), (0.149, 0.293)),
    ("BDA-SketRet", None): ((0.375, 0.504), (0.437, 0.514), (0.556, 0.458), (0.154, 0.355)),
    ("ZSE-SBIR (RN)", "zse_sbir"): ((0.542, 0.657), (0.698, 0.797), (0.525, 0.624), (0.145, 0.216)),
    ("ZSE-SBIR (Ret)", "zse_sbir"): ((0.569, 0.637), (0.736, 0.808), (0.504, 0.602), (0.142, 0.202)),
}

# ClusterRetri released logs, Sketchy split 1, SAKE features with L_DA: (variant, mAP@all, Prec@100)
_CLUSTERRETRI_LOG = (
    ("cluster M=2 K=32 (best)", 0.7690, 0.7421),
    ("cluster M=1 K=25", 0.6801, 0.6284),
    ("cluster M=1 K=32", 0.7426, 0.7109),
    ("cluster M=1 K=64", 0.7091, 0.7145),
    ("cluster M=2 K=32, fuse 0.2 (best)", 0.7615, 0.7602),
)
# the SAKE baseline (exact distances, no clustering) quoted with them: data set -> (mAP@all, Prec@100)
_SAKE_QUOTED = {"sketchy_ext_split1": (0.547, 0.692), "tuberlin_ext": (0.475, 0.599)}


def _row(method, variant, dataset, metric, value, preset, source) -> dict:
    return {"method": method, "variant": variant, "dataset": dataset, "metric": metric, "value": value,
            "preset": preset, "convention": CONVENTIONS[preset], "source": source}


def reference_rows() -> list[dict]:
    """One dict per published number: method, variant, dataset, metric, value, preset, convention, source."""
    rows = []
    for (method, preset), per_dataset in _ZSE_SBIR_TABLE.items():
        for dataset, values in zip(DATASETS, per_dataset):
            for metric, value in zip(CUSTOMARY_METRICS[dataset], values or ()):
                rows.append(_row(method, "", dataset, metric, value, preset, ZSE_SBIR_SOURCE))
    for variant, map_all, prec_100 in _CLUSTERRETRI_LOG:
        for metric, value in (("map@all", map_all), ("prec@100", prec_100)):
            rows.append(_row("ClusterRetri (SAKE features + L_DA)", variant, "sketchy_ext_split1", metric, value,
                             "clusterretri", CLUSTERRETRI_SOURCE))
    for dataset, values in _SAKE_QUOTED.items():
        for metric, value in zip(("map@all", "prec@100"), values):
            rows.append(_row("SAKE", "exact retrieval, no clustering", dataset, metric, value, "sake",
                             SAKE_QUOTED_SOURCE))
    return rows


def reference_frame(dataset: str | None = None) -> "pd.DataFrame":
    """The published numbers as a tidy DataFrame (one row per number), optionally of one data set."""
    import pandas as pd

    frame = pd.DataFrame(reference_rows())
    if dataset is not None:
        if dataset not in DATASETS:
            raise ValueError(f"no published numbers for {dataset!r}; reference data sets: {DATASETS}")
        frame = frame[frame["dataset"] == dataset].reset_index(drop=True)
    return frame
