"""verify and archive extraction on what real downloads hold: labels the class file does not define, classes without
images, tar archives (path escapes, links) and truncated archives."""
import io
import tarfile

import pytest

from fabricate_real import SKETCHY, sketchy_sake, zip_folder
from zssbir.data.layouts import extract
from zssbir.data.lists import Entry, read_list, write_list
from zssbir.data.prepare import prepare
from zssbir.data.verify import verify


def _prepared(isolated_dirs):
    prepare("sketchy_ext_split1", [sketchy_sake(isolated_dirs / "download")], classes=SKETCHY)
    return isolated_dirs / "data" / "Sketchy" / "zeroshot1"


def test_verify_flags_labels_the_class_file_does_not_define(isolated_dirs):
    lists = _prepared(isolated_dirs)
    assert verify("sketchy_ext_split1", classes=SKETCHY, decode=False, progress=False).ok
    path = lists / "all_photo_filelist_zero.txt"
    entries = read_list(path)
    write_list(path, entries + [Entry(entries[0].path, 7), Entry(entries[1].path, 9)])
    report = verify("sketchy_ext_split1", classes=SKETCHY, decode=False, progress=False)
    assert not report.ok
    text = report.text()
    assert "photo zero: 2 entries of all_photo_filelist_zero.txt have labels 7, 9 that cname_cid_zero.txt does " \
           "not define (it names 2 classes, ids 0 to 1)" in text
    assert "--lists folders" in text


def test_verify_flags_classes_without_images(isolated_dirs):
    lists = _prepared(isolated_dirs)
    path = lists / "sketch_tx_000000000000_ready_filelist_zero.txt"
    write_list(path, [e for e in read_list(path) if e.label != 1])   # wine_bottle's sketches gone from the list
    report = verify("sketchy_ext_split1", classes=SKETCHY, decode=False, progress=False)
    assert not report.ok and "sketch zero: classes without images: wine_bottle" in report.text()


def _tar(path, members):
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def test_tar_archives_unpack_and_refuse_escapes_and_links(tmp_path):
    ok = _tar(tmp_path / "ok.tar", [("photos/cat/a.jpg", b"jpg"), ("photos/cat/b.jpg", b"jpg2")])
    out = extract(ok, tmp_path / "ok")
    assert (out / "photos/cat/b.jpg").read_bytes() == b"jpg2"
    escape = _tar(tmp_path / "escape.tar", [("photos/a.jpg", b"x"), ("../../outside.txt", b"evil")])
    with pytest.raises(ValueError, match="the path leaves the destination folder"):
        extract(escape, tmp_path / "escape")
    assert not (tmp_path.parent / "outside.txt").exists() and not (tmp_path / "escape").exists()
    linked = tmp_path / "link.tar"
    with tarfile.open(linked, "w") as tf:
        info = tarfile.TarInfo("photos/passwd")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(info)
    with pytest.raises(ValueError, match="links and devices are not allowed"):
        extract(linked, tmp_path / "link")


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_truncated_archives_say_they_are_damaged_and_leave_nothing(tmp_path, kind):
    folder = tmp_path / "src" / "photos" / "cat"
    folder.mkdir(parents=True)
    for i in range(20):
        (folder / f"{i}.jpg").write_bytes(bytes(range(256)) * 40)
    if kind == "zip":
        archive = zip_folder(tmp_path / "src", tmp_path / "photos.zip")
    else:
        archive = tmp_path / "photos.tar.gz"
        with tarfile.open(archive, "w:gz") as tf:
            tf.add(tmp_path / "src", arcname="src")
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"photos\.(zip|tar\.gz) is damaged or incomplete.*download it again"):
        extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()
