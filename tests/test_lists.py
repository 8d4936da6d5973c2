import pytest

from zssbir.data.lists import (Entry, normalise_class_name, paired_photo_id, read_class_ids, read_list,
                               write_class_ids, write_list)


def test_label_is_last_token_and_paths_keep_spaces(tmp_path):
    f = tmp_path / "l.txt"
    f.write_text("png_ready/hot air balloon/1.png 12\n\nImageResized_ready/t-shirt/a b.JPEG 3\n")
    assert read_list(f) == [Entry("png_ready/hot air balloon/1.png", 12), Entry("ImageResized_ready/t-shirt/a b.JPEG", 3)]


def test_round_trip(tmp_path):
    entries = [Entry("a b/c d.png", 0), Entry("x/y.jpg", 7)]
    write_list(tmp_path / "l.txt", entries)
    assert read_list(tmp_path / "l.txt") == entries
    write_class_ids(tmp_path / "c.txt", ["hot air balloon", "cat"])
    assert read_class_ids(tmp_path / "c.txt") == {"hot air balloon": 0, "cat": 1}


@pytest.mark.parametrize("line, message", [("justapath.png\n", "expected"), ("a/b.png x\n", "integer label")])
def test_bad_list_lines_name_file_and_line(tmp_path, line, message):
    f = tmp_path / "bad.txt"
    f.write_text("ok/1.png 0\n" + line)
    with pytest.raises(ValueError, match=rf"bad.txt:2: .*{message}"):
        read_list(f)


def test_class_ids_must_be_contiguous_and_unique(tmp_path):
    f = tmp_path / "c.txt"
    f.write_text("cat 0\ndog 2\n")
    with pytest.raises(ValueError, match="without gaps"):
        read_class_ids(f)
    f.write_text("cat 0\ncat 1\n")
    with pytest.raises(ValueError, match="listed twice"):
        read_class_ids(f)


def test_missing_list_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.txt"):
        read_list(tmp_path / "nothere.txt")


def test_class_name_normalisation():
    assert normalise_class_name("Hot Air_Balloon") == normalise_class_name("hot-air-balloon") == "hotairballoon"
    assert normalise_class_name("teddy_bear") == normalise_class_name("teddy bear")


def test_paired_photo_id():
    assert paired_photo_id("sketch/x/airplane/n02691156_10151-3.png") == "n02691156_10151"
    assert paired_photo_id("sketch/x/cup/cup_0007-12.png") == "cup_0007"
    assert paired_photo_id("png_ready/cup/5123.png") is None
