"""The committed split files (data/splits/) and class-name matching."""
import pytest

from zssbir.data.benchmarks import BENCHMARKS
from zssbir.data.lists import normalise_class_name
from zssbir.data.splits import load_split_classes, match_classes

SIZES = {"sketchy_ext_split1": (100, 25), "sketchy_ext_split2": (104, 21), "tuberlin_ext": (220, 30),
         "quickdraw_ext": (80, 30)}


@pytest.mark.parametrize("dataset_id", sorted(SIZES))
def test_counts_and_disjointness(dataset_id):
    split = load_split_classes(dataset_id)
    assert (len(split.seen), len(split.unseen)) == SIZES[dataset_id]
    keys = [normalise_class_name(c) for c in split.all]
    assert len(set(keys)) == len(keys), "a class is listed twice (or both seen and unseen)"
    assert dataset_id in BENCHMARKS and BENCHMARKS[dataset_id].generator is None


def test_both_sketchy_splits_cover_the_same_125_classes():
    one, two = load_split_classes("sketchy_ext_split1"), load_split_classes("sketchy_ext_split2")
    assert sorted(one.all) == sorted(two.all) and len(one.all) == 125
    assert {"teddy_bear", "wine_bottle", "car_(sedan)", "hot-air_balloon"} <= set(one.all)


def test_unseen_lists_are_in_published_label_order():
    assert load_split_classes("sketchy_ext_split1").unseen[:3] == ("cup", "swan", "harp")
    assert load_split_classes("sketchy_ext_split2").unseen[0] == "bat"
    tub = load_split_classes("tuberlin_ext")
    assert tub.unseen[:2] == ("banana", "bus") and tub.unseen[-1] == "horse"
    qd = load_split_classes("quickdraw_ext")
    assert {"fire_hydrant", "palm_tree"} <= set(qd.unseen)


def test_tuberlin_names_keep_spaces_hyphens_and_qualifiers():
    tub = load_split_classes("tuberlin_ext")
    assert {"hot air balloon", "bottle opener", "space shuttle", "t-shirt", "frying-pan"} <= set(tub.unseen)
    assert {"bear (animal)", "car (sedan)", "teddy-bear", "alarm clock"} <= set(tub.seen)


def test_match_classes_normalises_unqualifies_and_reports_misspellings():
    m = match_classes(["hot air balloon", "bear (animal)", "t-shirt", "teddy_bear", "lion"],
                      ["hot air baloon", "bear", "T_Shirt", "teddy bear", "zebra"])
    assert m.found == {"t-shirt": "T_Shirt", "teddy_bear": "teddy bear", "bear (animal)": "bear",
                       "hot air balloon": "hot air baloon"}
    assert m.fuzzy == {"hot air balloon": "hot air baloon"}
    assert m.missing == ["lion"] and m.extra == ["zebra"]


def test_split_file_errors(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "seen.txt").write_text("cat\nteddy bear\n")
    with pytest.raises(FileNotFoundError, match="unseen.txt"):
        load_split_classes("x", tmp_path)
    (tmp_path / "x" / "unseen.txt").write_text("teddy_bear\n")
    with pytest.raises(ValueError, match="both seen and unseen"):
        load_split_classes("x", tmp_path)
