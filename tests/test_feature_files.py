"""Features files of others: the three layouts read and written, layouts detected, hostile pickles refused before
anything of them runs, and every bad input named in one line with nothing written."""
import io
import os
import pickle
import pickletools

import numpy as np
import pytest

from zssbir.data import feature_files as ff

NAMES = ("cat", "dog", "hot air balloon")


def arrays(seed=0, n_query=6, n_gallery=9, dim=5):
    rng = np.random.default_rng(seed)
    return {"query": rng.normal(size=(n_query, dim)).astype(np.float32),
            "query_labels": np.arange(n_query, dtype=np.int64) % 3,
            "gallery": rng.normal(size=(n_gallery, dim)).astype(np.float32),
            "gallery_labels": np.arange(n_gallery, dtype=np.int64) % 3}


def dump(path, obj, protocol=pickle.DEFAULT_PROTOCOL):
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=protocol)
    return path


def same(read, a):
    for key in ("query", "query_labels", "gallery", "gallery_labels"):
        got = getattr(read, key)
        assert got.dtype == a[key].dtype and np.array_equal(got, a[key]), key


# ------------------------------------------------------------------ reading each layout
@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_clusterretri_pickle_of_any_protocol_is_read_in_its_order(tmp_path, protocol):
    a = arrays()
    path = dump(tmp_path / "features.pickle", [a["gallery"], a["gallery_labels"], a["query"], a["query_labels"], None],
                protocol)
    for layout in ("auto", "clusterretri"):
        read = ff.read_features(path, layout)
        same(read, a)
        assert read.layout == "clusterretri" and read.class_names is None and read.query_codes is None
    assert read.sha256 == __import__("hashlib").sha256(path.read_bytes()).hexdigest()
    assert read.sizes == {"n_query": 6, "n_gallery": 9, "dim": 5, "n_classes": 3}


def test_a_pickle_written_by_numpy_1_is_read(tmp_path):
    """numpy 1 names numpy.core.multiarray._reconstruct where numpy 2 names numpy._core (the released files are
    numpy 1 pickles); protocol 2 spells globals as text, so the module name can be swapped in place."""
    a = arrays()
    data = pickle.dumps([a["gallery"], a["gallery_labels"], a["query"], a["query_labels"], None], protocol=2)
    old = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert old != data and b"numpy._core" not in old
    (tmp_path / "old.pickle").write_bytes(old)
    same(ff.read_features(tmp_path / "old.pickle"), a)


def test_sake_pickle_with_codes_and_scores_is_read_in_its_order(tmp_path):
    a = arrays()
    gc, qc = (a["gallery"] > 0).astype(np.uint8), (a["query"] > 0).astype(np.uint8)
    scores = -np.ones((6, 9))
    path = dump(tmp_path / "features_zero.pickle",
                [a["gallery"], gc, a["gallery_labels"], a["query"], qc, a["query_labels"], scores, scores])
    read = ff.read_features(path)
    same(read, a)
    assert read.layout == "sake" and np.array_equal(read.query_codes, qc) and np.array_equal(read.gallery_codes, gc)


def test_npz_with_class_names_is_read_and_detected_by_content(tmp_path):
    a = arrays()
    path = tmp_path / "features.bin"  # no telling extension: the zip signature decides
    with open(path, "wb") as fh:
        np.savez(fh, **a, class_names=np.array(NAMES))
    read = ff.read_features(path)
    same(read, a)
    assert read.layout == "npz" and read.class_names == NAMES


@pytest.mark.parametrize("layout", ff.LAYOUTS)
def test_written_files_read_back_identical(tmp_path, layout):
    a = arrays(seed=3)
    path = ff.write_features(tmp_path / f"out.{layout}", layout, **a, class_names=NAMES)
    read = ff.read_features(path)  # auto
    same(read, a)
    assert read.layout == layout and read.class_names == (NAMES if layout == "npz" else None)
    if layout == "sake":
        assert np.array_equal(read.query_codes, ff.sign_codes(a["query"]))
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


# ------------------------------------------------------------------ layouts
def test_unknown_and_mismatched_layouts_say_what_is_known_and_what_was_found(tmp_path):
    a = arrays()
    six = dump(tmp_path / "six.pickle", [a["gallery"], a["gallery_labels"], a["query"], a["query_labels"], None, None])
    with pytest.raises(ValueError, match=r"known layouts: clusterretri.*sake.*npz.*found a list of 6 items") as err:
        ff.read_features(six)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="found a dict"):
        ff.read_features(dump(tmp_path / "dict.pickle", dict(a)))
    five = dump(tmp_path / "five.pickle", [a["gallery"], a["gallery_labels"], a["query"], a["query_labels"], None])
    with pytest.raises(ValueError, match="layout sake is a pickled list of 8 items, found a list of 5 items"):
        ff.read_features(five, "sake")
    with pytest.raises(ValueError, match="unknown layout 'hdf5'"):
        ff.read_features(five, "hdf5")
    with pytest.raises(ValueError, match="unknown layout 'hdf5'"):
        ff.write_features(tmp_path / "x", "hdf5", **a)
    with pytest.raises(ValueError, match="not a readable pickle"):
        (tmp_path / "text.pickle").write_text("just text")
        ff.read_features(tmp_path / "text.pickle")
    with pytest.raises(FileNotFoundError):
        ff.read_features(tmp_path / "missing.pickle")


def test_npz_missing_arrays_or_holding_objects_is_refused(tmp_path):
    a = arrays()
    np.savez(tmp_path / "short.npz", query=a["query"], gallery=a["gallery"])
    with pytest.raises(ValueError, match=r"lacks arrays \['query_labels', 'gallery_labels'\]"):
        ff.read_features(tmp_path / "short.npz")
    np.savez(tmp_path / "objects.npz", **{**a, "query": np.array([object()] * 6)})
    with pytest.raises(ValueError, match="object array"):
        ff.read_features(tmp_path / "objects.npz")


# ------------------------------------------------------------------ hostile pickles
class OpensAFile:
    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return open, (self.target, "w")


class RunsACommand:
    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return os.system, (f"touch {self.target}",)


@pytest.mark.parametrize("hostile, refused", [(OpensAFile, "io.open"), (RunsACommand, f"{os.name}.system")])
def test_a_hostile_pickle_is_refused_before_it_runs(tmp_path, hostile, refused):
    target = tmp_path / "pwned"
    a = arrays()
    path = dump(tmp_path / "features.pickle",
                [a["gallery"], a["gallery_labels"], a["query"], a["query_labels"], hostile(target)])
    assert refused.encode().split(b".")[-1] in path.read_bytes()  # the call really is in the file
    with pytest.raises(ValueError, match=f"refused to unpickle global {refused.replace('.', '[.]')}"):
        ff.read_features(path)
    assert not target.exists()
    # and plain pickle would have run it: the test's pickle is live
    with open(path, "rb") as fh:
        pickle.load(fh)
    assert target.exists()


def test_only_numpy_s_own_globals_are_admitted(tmp_path):
    """A numpy global that is not one of the array-building ones (here numpy.load) is refused too, and so is
    the codec trick with another encoding than pickle's own latin1."""
    (tmp_path / "load.pickle").write_bytes(pickle.dumps([np.load], protocol=2))
    with pytest.raises(ValueError, match=r"refused to unpickle global numpy.load"):
        ff.read_features(tmp_path / "load.pickle")
    # _codecs.encode("abc", "rot13") in protocol 2 opcodes: GLOBAL, two BINUNICODE, TUPLE2, REDUCE, STOP
    rot13 = b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x05\x00\x00\x00rot13\x86R."
    pickletools.dis(rot13, out=io.StringIO())  # a well-formed pickle
    with pytest.raises(ValueError, match="refused _codecs.encode with encoding 'rot13'"):
        ff.safe_load(io.BytesIO(rot13))


# ------------------------------------------------------------------ bad arrays: one line, nothing written
def bad(**change):
    return {**arrays(), **change}


BAD = [
    (bad(query_labels=np.arange(5) % 3), "query features and labels differ in length: 6 feature rows, 5 labels"),
    (bad(query=np.ones((6, 4), np.float32)), "query and gallery features differ in width: 4 and 5 dimensions"),
    (bad(query=np.ones(6, np.float32)), r"query features must be 2-D \(items x dimensions\), got shape \(6,\)"),
    (bad(gallery=np.ones((0, 5), np.float32), gallery_labels=np.zeros(0, np.int64)), "gallery features are empty"),
    (bad(query_labels=np.array([0, 1, 2, 0, 1, 1]), gallery_labels=np.array([0, 1, 0, 1, 0, 1, 0, 1, 0])),
     "query class 2 \\('hot air balloon'\\) has no gallery item"),
    (bad(query_labels=np.arange(6) * 0.5), "query labels must be integers"),
]


def with_nan(key, row):
    a = arrays()
    a[key] = a[key].copy()
    a[key][row, 1] = np.nan if key == "query" else np.inf
    return a


@pytest.mark.parametrize("given, message", BAD + [
    ({**arrays(), "gallery_labels": np.arange(9) % 4}, r"gallery labels hold 3, outside the 3 class names \(labels 0..2\)"),
    (with_nan("query", 4), r"query features row 4 is not finite"),
    (with_nan("gallery", 7), r"gallery features row 7 is not finite"),
])
@pytest.mark.parametrize("layout", ["npz", "clusterretri"])
def test_bad_arrays_fail_in_one_line_and_write_nothing(tmp_path, given, message, layout):
    with pytest.raises(ValueError, match=message) as err:
        ff.write_features(tmp_path / "out", layout, **given, class_names=NAMES)
    assert "\n" not in str(err.value)
    assert not list(tmp_path.iterdir())
    # the same arrays in a file are refused on reading (the pickle layouts have no class names: labels are only
    # checked against names in npz)
    if "outside" in message and layout != "npz":
        return
    path = tmp_path / "given"
    if layout == "npz":
        with open(path, "wb") as fh:
            np.savez(fh, **given, class_names=np.array(NAMES))
    else:
        dump(path, [given["gallery"], given["gallery_labels"], given["query"], given["query_labels"], None])
    with pytest.raises(ValueError, match=message.replace(r" \('hot air balloon'\)", "" if layout != "npz" else
                                                          r" \('hot air balloon'\)")):
        ff.read_features(path, layout)


def test_a_failed_write_leaves_no_file(tmp_path, monkeypatch):
    a = arrays()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ff.pickle, "dump", broken)
    with pytest.raises(OSError, match="disk full"):
        ff.write_features(tmp_path / "out.pickle", "clusterretri", **a)
    assert not list(tmp_path.iterdir())
