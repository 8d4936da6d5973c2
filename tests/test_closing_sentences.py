"""The closing prose of 01, 05 and 06 (``zssbir.study.scoring``): sentences computed from the results they
describe, with no '-0.000', 'nan' or claim the numbers do not back."""
from types import SimpleNamespace

import numpy as np
import pandas as pd

from zssbir.study import scoring


def _grid() -> pd.DataFrame:
    rows = [("A, exact", 0, 0.50), ("A, exact", 1, 0.54), ("B, exact", 0, 0.30), ("B, exact", 1, 0.31),
            ("C, exact", 0, 0.13), ("C, exact", 1, 0.12)]
    return pd.DataFrame([{"row": r, "seed": s, "metric": "map@all", "value": v} for r, s, v in rows])


def test_signed_never_shows_minus_zero():
    assert scoring.signed(-1e-9) == "+0.000" and scoring.signed(-0.0004) == "+0.000"
    assert scoring.signed(-0.0126) == "-0.013" and scoring.signed(0.02, 2) == "+0.02"


def test_grid_sentences_name_the_best_and_worst_rows_and_the_spread():
    text = scoring.grid_sentences(_grid(), chance={"map@all": 0.125})
    assert text[0] == ("Of 3 rows, map@all is highest for A, exact (0.520 ± 0.028, 2 seeds) and lowest for C, exact "
                       "(0.125 ± 0.007, 2 seeds).")
    assert text[1] == "Chance is 0.125: 2 of 3 rows lie more than two standard deviations over seeds above it."
    assert text[2].startswith("The spread over seeds reaches 0.028 (A, exact)")
    one = scoring.grid_sentences(_grid()[lambda f: f["seed"] == 0])
    assert one[-1].startswith("With one seed per row no spread is measured") and "nan" not in " ".join(one)


def test_run_sentences_give_each_procedure_against_exact():
    scores = pd.DataFrame([
        {"name": "r__exact", "metric": "map@all", "value": 0.40, "retrieval": "exact", "M": None, "K": None,
         "variant": None, "tie_order": None},
        {"name": "r__cluster", "metric": "map@all", "value": 0.40000001, "retrieval": "cluster", "M": 2, "K": 16,
         "variant": "rerank", "tie_order": None}])
    text = scoring.run_sentences(scores, chance={"map@all": 0.1289})
    assert text[0] == "exact: map@all 0.400 (chance 0.129)."
    assert text[-1].startswith("Against exact retrieval, mAP@all moves by cluster M=2 K=16 rerank +0.000 on this run")


def test_study_sentences_count_verdicts_and_name_the_largest_moves():
    claims = pd.DataFrame({"paper": ["P", "P", "Q"], "claim": ["a helps", "b helps", "c helps"],
                           "verdict": ["supported on this benchmark", "not resolved by these seeds",
                                       "supported on this benchmark"], "fragile": [False, False, True]})
    conventions = pd.DataFrame({"axis": ["reference", "ap", "ties", "preset"], "setting": ["ref", "exact", "random", "sake"],
                                "scores": "exact cosine", "metric": "map@all", "delta": [0.0, -0.07, 0.0, 0.02]})
    spread = pd.DataFrame({"spread": [0.0, 0.0, 0.013, 0.0], "seeds": 2},
                          index=pd.MultiIndex.from_tuples([("exact", "map@all"), ("exact", "prec@100"),
                                                           ("cluster", "map@all"), ("cluster", "prec@100")]))
    round_trip = pd.DataFrame({"equal": [True, True]})
    text = scoring.study_sentences(claims, conventions, spread, round_trip)
    assert text[0] == ("Of 3 claims compared paired over seeds (Holm-corrected together): 2 supported on this benchmark; "
                       "1 not resolved by these seeds; 1 of the verdicts are fragile. Supported and not fragile: P, "
                       "\"a helps\".")
    assert text[1].startswith("One convention choice alone moves a number by up to 0.070 (ap = exact, map@all")
    assert "a published preset applied whole by up to 0.020 (sake" in text[1]
    assert text[2] == ("Random tie orders alone move map@all of the cluster scores by up to 0.013 (max - min over 2 "
                       "orders); no metric of the exact scores moves (they do not tie).")
    assert text[3].startswith("The run exported in the authors' layout and scored again gives 2 of 2 numbers equal")
    assert "disagree" in scoring.study_sentences(claims, conventions, spread, round_trip.assign(equal=[True, False]))[3]


def test_explore_sentences_summarise_the_fixed_queries():
    def comparison(ap_exact, ap_cluster, first_exact, first_cluster):
        return SimpleNamespace(exact=SimpleNamespace(ap=ap_exact, first_correct=first_exact),
                               cluster=SimpleNamespace(ap=ap_cluster, first_correct=first_cluster, name="cluster M=2"))

    sweep = pd.DataFrame({"AP cluster": [0.3, 0.5, 0.4], "AP exact": 0.35, "cell size": [9, 4, 0],
                          "cell share of the class": [0.2, 0.5, np.nan]}, index=pd.Index([2, 4, 8], name="K"))
    pairs = pd.DataFrame({"w": [0.5, 1.0, 1.5], "a_loc": [0.1, 0.2, 0.3], "a_glob": [0.3, 0.1, 0.2],
                          "paired": [True, False, True]})
    text = scoring.explore_sentences([comparison(0.5, 0.6, 3, 1), comparison(0.4, 0.4, 2, 2)], sweep, pairs)
    assert text[0] == ("Over the 2 fixed queries, cluster M=2 changes the query's AP by +0.050 on average against exact "
                       "retrieval (from +0.000 to +0.100); it shows the first photo of the query's class earlier for 1, "
                       "later for 0 and at the same rank for 1 of them.")
    assert "from 9 photos (20% of them of its class) to 0 (none of its class)" in text[1]
    assert text[1].endswith("its best K here is 4 (AP 0.500).")
    assert "rank correlation with the local score a_loc is 1.00" in text[2] and "other same-class pairs 1.00" in text[2]
