"""Issue 12, point 1: published list folders under every name in public use; prepare never crashes on them, never
renames or deletes what it did not create, and gives the same lists when run again."""
import json
import shutil

import pytest

from fabricate_real import (QUICKDRAW, SKETCHY, TUBERLIN, quickdraw, sketchy_published, tree_state, tuberlin)
from zssbir.cli import main
from zssbir.data.datasets import load_split
from zssbir.data.listnames import ListNamesError
from zssbir.data.lists import read_list
from zssbir.data.prepare import prepare
from zssbir.data.splits import SplitClasses
from zssbir.data.verify import verify

NO_READY = {"s_train": "sketch_tx_000000000000_filelist_train.txt",
            "s_test": "sketch_tx_000000000000_filelist_test.txt",
            "s_zero": "sketch_tx_000000000000_filelist_zero.txt"}
VARIANTS = {
    # SAKE's repack: _ready folders and list names, a held-out _test list
    "sake": dict(ready=True),
    # the original archive's folders and lists named after them (no _ready)
    "original, no _ready": dict(ready=False, names=NO_READY),
    # the tree: one list without _ready among _ready ones, no held-out list
    "one list without _ready, no val": dict(ready=True, val=False,
                                            names={"s_train": NO_READY["s_train"]}),
    # ZSE-SBIR: SAKE's names, no held-out list
    "zse-sbir": dict(ready=True, val=False),
    "zse-sbir, no _ready": dict(ready=False, val=False, names=NO_READY),
    # the held-out list called _val instead of _test
    "val instead of test": dict(ready=True, names={"s_test": "sketch_tx_000000000000_ready_filelist_val.txt"}),
}


def _lists(root, list_dir="zeroshot1"):
    return {p.name: p.read_bytes() for p in sorted((root / list_dir).iterdir()) if p.name != "prepared.json"}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_list_name_variant_prepares_loads_and_verifies(isolated_dirs, variant):
    src = sketchy_published(isolated_dirs / "download", **VARIANTS[variant])
    before = tree_state(src)
    report = prepare("sketchy_ext_split1", [src], classes=SKETCHY)
    assert report.lists == "published", report.text()
    train, val = load_split("sketchy_ext_split1", "train", "sketch"), load_split("sketchy_ext_split1", "val", "sketch")
    assert (len(train), len(val)) == (15, 3)  # 3 seen classes x 6 sketches, one per class held out
    assert not {e.path for e in train.entries} & {e.path for e in val.entries}
    assert len(load_split("sketchy_ext_split1", "zero", "sketch")) == 12
    assert load_split("sketchy_ext_split1", "zero", "photo").class_names == SKETCHY.unseen
    assert tree_state(src) == before, "prepare changed the user's download"

    root = isolated_dirs / "data" / "Sketchy"
    first = _lists(root)
    for again in ([], [src]):  # running it again, with or without --source, changes nothing
        prepare("sketchy_ext_split1", again, classes=SKETCHY)
        assert _lists(root) == first
    published = {p.name: p.read_bytes() for p in sorted((src / "Sketchy" / "zeroshot1").iterdir())}
    for name, data in published.items():  # every published file is still there, or kept as <name>.published
        assert first.get(name) == data or first.get(name + ".published") == data, name
    result = verify("sketchy_ext_split1", classes=SKETCHY)
    assert result.ok, result.text()


def test_zse_sbir_zeroshot0_holds_sketchy_split_2(isolated_dirs):
    other = SplitClasses(seen=("teddy_bear", "hot-air_balloon", "wine_bottle"), unseen=("cat", "car_(sedan)"))
    src = sketchy_published(isolated_dirs / "download", SKETCHY, list_dir="zeroshot1", val=False)
    # ZSE-SBIR's zeroshot0: split 2's lists over the same images, without a held-out list
    prepare("sketchy_ext_split2", [src], data_root=isolated_dirs / "scratch", classes=other)
    _republish(isolated_dirs / "scratch" / "Sketchy" / "zeroshot2", src / "Sketchy" / "zeroshot0",
               {"sketch_tx_000000000000_ready_filelist_test.txt": None})
    report = prepare("sketchy_ext_split2", [src], classes=other)
    assert report.lists == "published"
    assert any("zeroshot0 holds this split's lists under another folder name" in n for n in report.notes)
    z = isolated_dirs / "data" / "Sketchy" / "zeroshot2"
    assert (z / "cname_cid_zero.txt").read_text() == "cat 0\ncar_(sedan) 1\n"
    assert load_split("sketchy_ext_split2", "zero", "sketch").class_names == other.unseen
    # split 1 from the same download takes zeroshot1, its own folder
    prepare("sketchy_ext_split1", [src], classes=SKETCHY)
    assert load_split("sketchy_ext_split1", "zero", "sketch").class_names == SKETCHY.unseen


def test_a_zeroshot0_of_another_split_is_not_used(isolated_dirs):
    src = sketchy_published(isolated_dirs / "download", SKETCHY, list_dir="zeroshot0", val=False)
    other = SplitClasses(seen=("teddy_bear", "hot-air_balloon", "wine_bottle"), unseen=("cat", "car_(sedan)"))
    report = prepare("sketchy_ext_split2", [src], classes=other)
    assert report.lists == "scanned"  # written from the folders
    assert any("zeroshot0 holds another split" in n and "not used" in n for n in report.notes)
    assert load_split("sketchy_ext_split2", "zero", "sketch").class_names == other.unseen


def test_unknown_list_names_say_what_is_expected_and_found_and_nothing_is_renamed(isolated_dirs, capsys):
    src = sketchy_published(isolated_dirs / "download", names={"s_train": "train_sketches.txt",
                                                                "s_zero": "zero_sketches.txt"})
    before = tree_state(src)
    with pytest.raises(ListNamesError) as err:
        prepare("sketchy_ext_split1", [src], classes=SKETCHY)
    text = str(err.value)
    assert "sketch train list: one of sketch_tx_000000000000_ready_filelist_train.txt, " \
           "sketch_tx_000000000000_filelist_train.txt" in text
    assert "sketch zero list: one of" in text and "sketch val list" not in text  # val may be held out
    assert "Files found in" in text and "train_sketches.txt" in text and "zero_sketches.txt" in text
    assert "`zssbir data prepare sketchy_ext_split1 --lists folders`" in text
    lists = isolated_dirs / "data" / "Sketchy" / "zeroshot1"
    copied = tree_state(lists)
    [problem] = verify("sketchy_ext_split1", classes=SKETCHY).errors  # verify does not send the user back to the error
    assert "sketch train list: one of sketch_tx_000000000000_ready_filelist_train.txt" in problem.text
    assert "`zssbir data prepare sketchy_ext_split1 --lists folders`" in problem.fix
    # the command line says the same in a few lines, every time it is run
    for _ in range(2):
        assert main(["data", "prepare", "sketchy_ext_split1", "--source", str(src)]) == 2
        out = capsys.readouterr().err
        assert "train_sketches.txt" in out and "--lists folders" in out and "Traceback" not in out
        assert len(out.strip().splitlines()) < 12
    assert tree_state(src) == before and tree_state(lists) == copied, "a failed prepare changed files"

    report = prepare("sketchy_ext_split1", classes=SKETCHY, lists="folders")
    assert report.lists == "scanned" and len(load_split("sketchy_ext_split1", "train", "sketch")) == 15
    kept = {p.name: p.read_bytes() for p in lists.iterdir()}
    for name, _, _ in copied:  # the published files are all still there (rewritten ones as <name>.published)
        original = (src / "Sketchy" / "zeroshot1" / name).read_bytes()
        assert kept.get(name) == original or kept.get(name + ".published") == original, name
    again = {p.name: p.read_bytes() for p in lists.iterdir() if p.name != "prepared.json"}
    prepare("sketchy_ext_split1", classes=SKETCHY)  # auto: what the last run did
    assert {p.name: p.read_bytes() for p in lists.iterdir() if p.name != "prepared.json"} == again
    assert json.loads((lists / "prepared.json").read_text())["lists"] == "scanned"
    assert verify("sketchy_ext_split1", classes=SKETCHY).ok


def test_lists_unpacked_straight_into_the_data_folder(isolated_dirs, capsys):
    """The user unpacked a ZSE-SBIR-style download into $ZSSBIR_DATA (no --source): verify points to prepare,
    prepare keeps the published train list it has to rewrite as .published, and runs again unchanged."""
    sketchy_published(isolated_dirs / "data", ready=False, val=False, names=NO_READY)
    root = isolated_dirs / "data" / "Sketchy"
    published = {p.name: p.read_bytes() for p in (root / "zeroshot1").iterdir()}
    result = verify("sketchy_ext_split1", classes=SKETCHY)
    assert not result.ok
    text = result.text()
    assert "holds published lists" in text and "sketch_tx_000000000000_filelist_train.txt" in text
    assert "run `zssbir data prepare sketchy_ext_split1`" in text
    prepare("sketchy_ext_split1", classes=SKETCHY)
    first = _lists(root)
    for name, data in published.items():
        assert first[name] == data, f"prepare changed the published {name}"
    assert verify("sketchy_ext_split1", classes=SKETCHY).ok
    # now with SAKE's names: the train list itself loses its held-out sketches, the published one is kept
    shutil.rmtree(root / "zeroshot1")
    sketchy_published(isolated_dirs / "data", ready=False, val=False)
    published = {p.name: p.read_bytes() for p in (root / "zeroshot1").iterdir()}
    prepare("sketchy_ext_split1", classes=SKETCHY)
    train = "sketch_tx_000000000000_ready_filelist_train.txt"
    assert (root / "zeroshot1" / (train + ".published")).read_bytes() == published[train]
    assert len(read_list(root / "zeroshot1" / train)) == 15
    first = _lists(root)
    for lists in ("auto", "published"):
        prepare("sketchy_ext_split1", classes=SKETCHY, lists=lists)
        assert _lists(root) == first
    assert len(load_split("sketchy_ext_split1", "train", "sketch")) == 15


def _republish(prepared_lists, dest, names: dict[str, str | None]):
    """A published list folder made from lists prepare wrote, renamed (None: left out; a left-out held-out list
    goes back into the train list, as in a release without one)."""
    dest.mkdir(parents=True)
    held_out = {n for n, new in names.items() if new is None}
    for p in prepared_lists.iterdir():
        if p.name in held_out or p.name == "prepared.json":
            continue
        text = p.read_text()
        if held_out and "train" in p.name and "photo" not in p.name.lower() and "Image" not in p.name:
            text += "".join((prepared_lists / n).read_text() for n in held_out)
        (dest / names.get(p.name, p.name)).write_text(text)


def test_quickdraw_and_tuberlin_list_names(isolated_dirs):
    qd = quickdraw(isolated_dirs / "dl" / "QuickDraw")
    prepare("quickdraw_ext", [qd], data_root=isolated_dirs / "scratch", classes=QUICKDRAW)
    _republish(isolated_dirs / "scratch" / "QuickDraw" / "zeroshot", qd / "zeroshot",
               {"sketch_train.txt": "sketch_filelist_train.txt", "sketch_test.txt": None,
                "sketch_zero.txt": "sketch_filelist_zero.txt", "all_photo_train.txt": "photo_filelist_train.txt",
                "all_photo_zero.txt": "photo_filelist_zero.txt"})
    report = prepare("quickdraw_ext", [qd], classes=QUICKDRAW)
    assert report.lists == "published" and any("held out 3 seen sketches" in n for n in report.notes)
    assert len(read_list(qd / "zeroshot" / "sketch_filelist_train.txt")) == 15  # the published list, unchanged
    assert len(load_split("quickdraw_ext", "train", "sketch")) == 12 and verify("quickdraw_ext", classes=QUICKDRAW).ok

    tub = tuberlin(isolated_dirs / "dl" / "TUBerlin")
    prepare("tuberlin_ext", [tub], data_root=isolated_dirs / "scratch", classes=TUBERLIN)
    _republish(isolated_dirs / "scratch" / "TUBerlin" / "zeroshot", tub / "zeroshot",
               {f"png_ready_filelist_{s}.txt": f"png_filelist_{s}.txt" for s in ("train", "test", "zero")}
               | {f"ImageResized_ready_filelist_{s}.txt": f"ImageResized_filelist_{s}.txt" for s in ("train", "zero")})
    report = prepare("tuberlin_ext", [tub], classes=TUBERLIN)
    assert report.lists == "published"
    assert load_split("tuberlin_ext", "zero", "sketch").class_names == TUBERLIN.unseen
    assert verify("tuberlin_ext", classes=TUBERLIN).ok
