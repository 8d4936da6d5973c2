"""Issue 12, points 3 (verify decodes), 4, 5 and 6: class folders as users bring them (empty, renamed, oddly named)
and broken image files; every message names the class or file and a fix a user can act on."""
import shutil

import pytest

from fabricate_real import ODD, QUICKDRAW, SKETCHY, break_file, quickdraw, sketchy_original, tree_state
from zssbir.cli import main
from zssbir.data.datasets import MissingDataError, UnreadableImageError, load_split
from zssbir.data.prepare import prepare
from zssbir.data.splits import likely_matches
from zssbir.data.verify import verify


def test_empty_class_folder_is_refused_naming_the_class(isolated_dirs):
    src = sketchy_original(isolated_dirs / "dl")
    for f in (src / "256x256/photo/tx_000000000000/wine_bottle").iterdir():
        f.unlink()
    (src / "256x256/photo/tx_000000000000/wine_bottle/Thumbs.db").write_bytes(b"x")  # not an image
    before = tree_state(src)
    with pytest.raises(MissingDataError) as err:
        prepare("sketchy_ext_split1", [src], classes=SKETCHY)
    text = str(err.value)
    assert "1 classes of the split files have no images" in text
    assert "wine_bottle: the folder 256x256/photo/tx_000000000000/wine_bottle/ is empty" in text
    assert str(src / "256x256/photo/tx_000000000000") in text  # where the images go
    assert "`zssbir data prepare sketchy_ext_split1` again" in text and "--source" not in text
    assert tree_state(src) == before
    # the same class missing altogether is the same error
    shutil.rmtree(src / "256x256/photo/tx_000000000000/wine_bottle")
    with pytest.raises(MissingDataError, match="wine_bottle: no folder in 256x256/photo/tx_000000000000/"):
        prepare("sketchy_ext_split1", [src], classes=SKETCHY)


def test_renamed_class_folder_gets_the_likely_match(isolated_dirs, capsys):
    src = sketchy_original(isolated_dirs / "dl")
    for rel in ("256x256/sketch/tx_000000000000", "256x256/photo/tx_000000000000", "EXTEND_image_sketchy"):
        (src / rel / "teddy_bear").rename(src / rel / "teddy")
    with pytest.raises(MissingDataError) as err:
        prepare("sketchy_ext_split1", [src], classes=SKETCHY)
    text = str(err.value)
    assert ("teddy_bear: no folder in 256x256/sketch/tx_000000000000/; the folder 'teddy' there is in no split "
            "file: if it holds teddy_bear, rename it to 'teddy_bear'") in text
    # renamed after prepare: verify says which class the stray folder probably is
    for rel in ("256x256/sketch/tx_000000000000", "256x256/photo/tx_000000000000", "EXTEND_image_sketchy"):
        (src / rel / "teddy").rename(src / rel / "teddy_bear")
    prepare("sketchy_ext_split1", [src], classes=SKETCHY)
    (src / "256x256/photo/tx_000000000000/teddy_bear").rename(src / "256x256/photo/tx_000000000000/teddy")
    report = verify("sketchy_ext_split1", classes=SKETCHY, decode=False)
    [missing] = [p for p in report.errors if p.text.startswith("class 'teddy_bear'")]
    assert "the folder 'teddy' there is in no split file and is probably this class" in missing.text
    assert "rename it to 'teddy_bear'" in missing.fix and "zssbir data prepare sketchy_ext_split1" in missing.fix
    [stray] = [w for w in report.warnings if "folder 256x256/photo/tx_000000000000/teddy " in w.text]
    assert "probably class 'teddy_bear'" in stray.text and "rename it to 'teddy_bear'" in stray.fix
    assert "listed files are absent" in report.text()


def test_missing_class_folder_fix_does_not_promise_that_prepare_restores_it(isolated_dirs):
    prepare("quickdraw_ext", [quickdraw(isolated_dirs / "dl")], classes=QUICKDRAW)
    shutil.rmtree(isolated_dirs / "dl" / "QuickDraw_images_final" / "duck")
    report = verify("quickdraw_ext", classes=QUICKDRAW, decode=False)
    [problem] = [p for p in report.errors if p.text.startswith("class 'duck'")]
    assert str(isolated_dirs / "dl" / "QuickDraw_images_final" / "duck") in problem.fix
    assert "cannot restore one class" in problem.fix and "--source" not in problem.fix
    [absent] = [p for p in report.errors if "listed files are absent" in p.text]
    assert "run `zssbir data prepare quickdraw_ext` again" in absent.fix  # lists written from the folders


def test_likely_matches():
    assert likely_matches(["teddy_bear", "wine_bottle", "cat"], ["teddy", "winebotle", "zebra"]) == \
        {"teddy_bear": "teddy", "wine_bottle": "winebotle"}
    assert likely_matches(["car_(sedan)"], ["Car"]) == {"car_(sedan)": "Car"}
    assert likely_matches(["cat"], ["zebra", "bus"]) == {}


def test_odd_class_names_prepare_and_load(isolated_dirs):
    """Spaces, hyphens, parentheses and capitals, spelled differently by the split file and the folders."""
    src = sketchy_original(isolated_dirs / "dl", ODD)
    for rel in ("256x256/sketch/tx_000000000000", "256x256/photo/tx_000000000000", "EXTEND_image_sketchy"):
        (src / rel / "Hot Air-Balloon").rename(src / rel / "hot_air_balloon")
        (src / rel / "Wine-Bottle").rename(src / rel / "wine bottle")
    report = prepare("sketchy_ext_split1", [src], classes=ODD)
    assert not any("is in no split file" in n for n in report.notes)
    assert load_split("sketchy_ext_split1", "train", "photo").class_names == ODD.seen
    zero = load_split("sketchy_ext_split1", "zero", "sketch")
    assert zero.class_names == ODD.unseen and {e.path.split("/")[3] for e in zero.entries} == {"teddy bear",
                                                                                                 "wine bottle"}
    assert verify("sketchy_ext_split1", classes=ODD).ok


@pytest.mark.parametrize("workers", [1, 2])
def test_verify_decodes_every_image_and_names_each_broken_one(isolated_dirs, capsys, workers):
    src = sketchy_original(isolated_dirs / "dl")
    prepare("sketchy_ext_split1", [src], classes=SKETCHY)
    broken = {"256x256/photo/tx_000000000000/cat/n00_1.jpg": "truncated",
              "256x256/sketch/tx_000000000000/wine_bottle/n04_2-1.png": "truncated",
              "EXTEND_image_sketchy/car_(sedan)/ext_1.jpg": "empty",
              "256x256/sketch/tx_000000000000/teddy_bear/n03_0-2.png": "text"}
    for rel, how in broken.items():
        break_file(src / rel, how)
    report = verify("sketchy_ext_split1", classes=SKETCHY, workers=workers)
    [error] = [p for p in report.errors if "images cannot be read" in p.text]
    assert error.text.startswith("4 images cannot be read")
    reasons = {"truncated": "(truncated)", "empty": "(empty file (0 bytes))", "text": "(not an image)"}
    for rel, how in broken.items():
        assert f"{rel} {reasons[how]}" in error.text
    assert "replace each with a good copy from the original archive" in error.fix
    assert "`zssbir train --set unreadable_images=skip`" in error.fix and "(lists that" not in error.fix
    assert main(["data", "verify", "sketchy_ext_split1", "--workers", str(workers)]) == 1  # shows progress
    captured = capsys.readouterr()
    assert "4 images cannot be read" in captured.out and f"decoding ({workers} threads)" in captured.err
    # loading one of them names the file, its list and the fix
    photos = load_split("sketchy_ext_split1", "train", "photo")
    index = next(i for i, e in enumerate(photos.entries) if e.path.endswith("cat/n00_1.jpg"))
    with pytest.raises(UnreadableImageError) as err:
        photos[index]
    text = str(err.value)
    assert "cannot read image" in text and "n00_1.jpg" in text and "all_photo_filelist_train.txt" in text
    assert "zssbir data verify sketchy_ext_split1" in text and "unreadable_images=skip" in text
