"""Real benchmarks on fabricated trees in every official layout: prepare, load, verify, and their errors."""
import zipfile

import pytest

from fabricate_real import (QUICKDRAW, SKETCHY, TUBERLIN, quickdraw, sketchy_original, sketchy_sake,
                            tuberlin, zip_folder)
from zssbir.cli import main
from zssbir.data.datasets import MissingDataError, load_split
from zssbir.data.layouts import extract
from zssbir.data.lists import read_list
from zssbir.data.prepare import prepare
from zssbir.data.summary import load_all, pairs
from zssbir.data.tools import ensure_dataset
from zssbir.data.verify import verify


def _tree_state(folder):
    return sorted((p.relative_to(folder).as_posix(), p.stat().st_size) for p in folder.rglob("*"))


def test_sake_sketchy_keeps_published_lists_and_drops_duplicate_originals(isolated_dirs):
    src = sketchy_sake(isolated_dirs / "download")
    before = _tree_state(src)
    report = prepare("sketchy_ext_split1", [src], classes=SKETCHY)
    assert report.lists == "published"
    # 5 classes x 3 originals listed twice
    assert report.duplicates == 15 and "duplicate photo entries" in report.text()
    assert _tree_state(src) == before, "prepare changed the user's download"
    dropped = load_split("sketchy_ext_split1", "zero", "photo")
    kept = load_split("sketchy_ext_split1", "zero", "photo", duplicates="keep")
    assert (len(kept), len(dropped), dropped.info.duplicates_dropped) == (2 * 9, 2 * 6, 6)
    val = load_split("sketchy_ext_split1", "val", "sketch")
    assert len(val) == 3 and val.class_names == SKETCHY.seen
    result = verify("sketchy_ext_split1", classes=SKETCHY)
    assert result.ok, result.text()
    assert result.duplicates == 15 and any("published figure is 75481" in w.text for w in result.warnings)


def test_sake_lists_that_disagree_with_the_split_file(isolated_dirs):
    src = sketchy_sake(isolated_dirs / "download")
    other = type(SKETCHY)(seen=SKETCHY.seen, unseen=("teddy_bear", "zebra"))
    with pytest.raises(ValueError, match=r"cname_cid_zero.txt disagrees .*missing \['zebra'\].*\['wine_bottle'\]"):
        prepare("sketchy_ext_split1", [src], classes=other)


def test_original_sketchy_archive_plus_extended_photos(isolated_dirs):
    sketches = sketchy_original(isolated_dirs / "dl" / "rendered_256x256", extended=False)
    archive = zip_folder(sketches, isolated_dirs / "dl" / "rendered_256x256.zip")
    extended = sketchy_original(isolated_dirs / "dl" / "ext", photos=3, sketches=0)
    report = prepare("sketchy_ext_split2", [archive, extended / "EXTEND_image_sketchy"], classes=SKETCHY)
    assert report.lists == "scanned" and report.duplicates == 15
    root = isolated_dirs / "data" / "Sketchy"
    assert (root / "256x256").is_symlink() and (root / "EXTEND_image_sketchy").is_symlink()
    data = load_all("sketchy_ext_split2")
    assert data[("zero", "sketch")].class_names == SKETCHY.unseen
    assert len(data[("train", "sketch")]) + len(data[("val", "sketch")]) == 3 * 3 * 2
    assert len(data[("val", "sketch")]) == 3  # round(0.1 * 6 + 0.5) = 1 per seen class
    linked = pairs(data[("zero", "sketch")], data[("zero", "photo")])
    assert sum(map(len, linked.values())) == 2 * 3 * 2  # every sketch finds the photo it was drawn from
    lists = sorted((root / "zeroshot2").glob("*.txt"))
    first = [p.read_text() for p in lists]
    prepare("sketchy_ext_split2", [archive, extended / "EXTEND_image_sketchy"], classes=SKETCHY)
    assert [p.read_text() for p in lists] == first, "prepare is not idempotent"


def test_tuberlin_png_and_image_resized_with_misspelled_folders(isolated_dirs):
    src = tuberlin(isolated_dirs / "dl")
    report = prepare("tuberlin_ext", [src], classes=TUBERLIN)
    assert any("misspelled folder ImageResized/hot air baloon" in n for n in report.notes)
    photos = load_split("tuberlin_ext", "train", "photo")
    assert photos.class_names == TUBERLIN.seen and len(photos) == 9
    assert any(e.path.startswith("ImageResized/bear/") and e.label == 0 for e in photos.entries)
    assert load_split("tuberlin_ext", "zero", "sketch").class_names == ("t-shirt", "frying-pan")
    assert verify("tuberlin_ext", classes=TUBERLIN).ok


def test_quickdraw_folders_and_zse_sbir_lists_without_val(isolated_dirs):
    prepare("quickdraw_ext", [quickdraw(isolated_dirs / "dl")], classes=QUICKDRAW)
    assert len(load_split("quickdraw_ext", "zero", "photo")) == 6
    z = isolated_dirs / "data" / "QuickDraw" / "zeroshot"
    # now pretend the lists were published by ZSE-SBIR: no held-out (val) sketch list
    (z / "prepared.json").unlink()
    (z / "sketch_train.txt").write_text((z / "sketch_train.txt").read_text() + (z / "sketch_test.txt").read_text())
    (z / "sketch_test.txt").unlink()
    report = prepare("quickdraw_ext", classes=QUICKDRAW)
    assert report.lists == "published" and any("held out 3 seen sketches" in n for n in report.notes)
    assert len(read_list(z / "sketch_train.txt.published")) == 15
    assert len(load_split("quickdraw_ext", "train", "sketch")) == 12


def test_verify_finds_corrupt_absent_and_missing_classes(isolated_dirs, capsys):
    prepare("quickdraw_ext", [quickdraw(isolated_dirs / "dl")], classes=QUICKDRAW)
    root = isolated_dirs / "dl"
    (root / "QuickDraw_images_final/duck/image_00001.jpg").write_bytes(b"not a jpeg")
    (root / "QuickDraw_sketches_final/cat/5000.png").unlink()
    wider = type(QUICKDRAW)(seen=QUICKDRAW.seen, unseen=QUICKDRAW.unseen + ("zebra",))
    report = verify("quickdraw_ext", classes=wider)
    text = report.text()
    assert not report.ok
    assert "1 listed files are absent: QuickDraw_sketches_final/cat/5000.png" in text
    assert "1 images cannot be read: QuickDraw_images_final/duck/image_00001.jpg" in text
    assert "class 'zebra' of the split files has no folder" in text and "fix:" in text
    with pytest.raises(MissingDataError, match=r"1 of \d+ files listed .*missing(?s:.*)5000.png(?s:.*)zssbir data"):
        load_split("quickdraw_ext", "train", "sketch")
    splits = isolated_dirs / "splits" / "quickdraw_ext"
    splits.mkdir(parents=True)
    (splits / "seen.txt").write_text("\n".join(QUICKDRAW.seen))
    (splits / "unseen.txt").write_text("\n".join(QUICKDRAW.unseen))
    assert main(["data", "verify", "quickdraw_ext", "--splits-dir", str(splits.parent), "--quiet"]) == 1
    assert "2 errors" in capsys.readouterr().out


def test_split_class_absent_on_disk_fails_prepare_and_load(isolated_dirs):
    src = quickdraw(isolated_dirs / "dl")
    wider = type(QUICKDRAW)(seen=QUICKDRAW.seen, unseen=QUICKDRAW.unseen + ("zebra",))
    with pytest.raises(MissingDataError) as err:
        prepare("quickdraw_ext", [src], classes=wider)
    text = str(err.value)
    assert "1 classes of the split files have no images" in text
    assert "zebra: no folder in QuickDraw_sketches_final/" in text and "zebra: no folder in QuickDraw_images_final/" in text
    # the fix names where the images go (the linked source), the split file, and the command to run again
    assert str(src / "QuickDraw_sketches_final") in text and "data/splits/quickdraw_ext/" in text
    assert "`zssbir data prepare quickdraw_ext` again" in text and "--source" not in text
    prepare("quickdraw_ext", [src], classes=QUICKDRAW)
    z = isolated_dirs / "data" / "QuickDraw" / "zeroshot"
    (z / "cname_cid_zero.txt").write_text((z / "cname_cid_zero.txt").read_text() + "zebra 2\n")
    with pytest.raises(MissingDataError, match="1 classes of .*cname_cid_zero.txt have no sketch(?s:.*)zebra"):
        load_split("quickdraw_ext", "zero", "sketch")


def test_missing_real_dataset_says_what_where_and_how(isolated_dirs):
    with pytest.raises(MissingDataError) as err:
        ensure_dataset("sketchy_ext_split1")
    text = str(err.value)
    assert "7 list files are missing" in text and "cname_cid.txt" in text
    assert str(isolated_dirs / "data" / "Sketchy") in text and "zssbir data download sketchy_ext_split1" in text
    assert main(["data", "prepare", "tuberlin_ext", "--source", str(isolated_dirs / "nothere.zip")]) == 2


def test_archives_cannot_write_outside_their_folder(tmp_path):
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("../escape.txt", "x")
    with pytest.raises(ValueError, match="leaves the destination"):
        extract(bad, tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists()
    good = zip_folder(tuberlin(tmp_path / "t"), tmp_path / "t.zip")
    out = extract(good, tmp_path / "out")
    assert (out / "t" / "png").is_dir() and extract(good, out) == out and good.is_file()
