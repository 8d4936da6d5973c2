"""Features files: a query (sketch) and a gallery (photo) feature matrix with their labels, as others release them.

Three layouts are read and written:

* ``clusterretri``: a pickle of the 5-item list ``[gallery features, gallery labels, query features, query labels,
  scores or None]``, the file ClusterRetri's ``src/clusterretr.py`` reads (its Sketchy-Ext split-1 release:
  17,101 photos x 15,229 sketches x 512 float32, int64 labels);
* ``sake``: a pickle of the 8-item list ``[gallery features, gallery binary codes, gallery labels, query features,
  query binary codes, query labels, scores, binary scores]``, SAKE's ``features_zero.pickle`` of its ITQ test
  scripts;
* ``npz``: a numpy ``.npz`` of named arrays ``query``, ``query_labels``, ``gallery``, ``gallery_labels`` and
  optionally ``class_names`` (strings), read with ``allow_pickle=False``.

Neither pickle layout holds class names; only ``npz`` does. Scores stored in a pickle are not kept (they are
recomputed from the features). A downloaded pickle is untrusted: it is read by ``SafeUnpickler``, which builds only
numpy arrays, dtypes and scalars (and lists, tuples, numbers, strings, None, which need no global) and refuses every
other global by name, before anything of it runs. Every check of ``check_features`` fails in one line
(``ValueError``), and ``write_features`` writes nothing unless the arrays pass it; it writes atomically.
"""
from __future__ import annotations

import hashlib
import importlib
import os
import pickle
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

LAYOUTS = ("clusterretri", "sake", "npz")
LAYOUT_ITEMS = {"clusterretri": 5, "sake": 8}
NPZ_KEYS = ("query", "query_labels", "gallery", "gallery_labels")
PICKLE_PROTOCOL = 4  # what the authors' Python versions (3.6, 3.7) can read
_KNOWN_TEXT = ("known layouts: clusterretri (a pickled list of 5 items), sake (a pickled list of 8 items), "
               "npz (a .npz of query, query_labels, gallery, gallery_labels[, class_names])")


# ------------------------------------------------------------------ the restricted unpickler
def _numpy_core(sub: str):
    """numpy's ``_core.<sub>`` (numpy 2), else ``core.<sub>`` (numpy 1): pickles of either version name either."""
    try:
        return importlib.import_module(f"numpy._core.{sub}")
    except ImportError:  # pragma: no cover - numpy 1
        return importlib.import_module(f"numpy.core.{sub}")


def _latin1_encode(text, encoding: str = "latin1"):
    """Pickle protocols 0-2 store ``bytes`` (here: an array's raw data) as ``_codecs.encode(text, "latin1")``;
    only that encoding is admitted."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"refused _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _admitted() -> dict[tuple[str, str], Callable[[], Any]]:
    out: dict[tuple[str, str], Callable[[], Any]] = {("numpy", "ndarray"): lambda: np.ndarray,
                                                     ("numpy", "dtype"): lambda: np.dtype,
                                                     ("_codecs", "encode"): lambda: _latin1_encode}
    for core in ("numpy.core", "numpy._core"):
        out[(f"{core}.multiarray", "_reconstruct")] = lambda: _numpy_core("multiarray")._reconstruct
        out[(f"{core}.multiarray", "scalar")] = lambda: _numpy_core("multiarray").scalar
        out[(f"{core}.numeric", "_frombuffer")] = lambda: _numpy_core("numeric")._frombuffer  # protocol 5 arrays
    return out


ADMITTED = _admitted()


class SafeUnpickler(pickle.Unpickler):
    """Unpickles only numpy arrays, dtypes and scalars besides plain containers and numbers: ``find_class`` admits
    the globals numpy's own pickles use (``ADMITTED``) and raises ``ValueError`` naming any other, so no other
    callable of the file is ever looked up, let alone called."""

    def find_class(self, module: str, name: str):
        resolve = ADMITTED.get((module, name))
        if resolve is None:
            raise ValueError(f"refused to unpickle global {module}.{name}: a features file may hold only numpy "
                             "arrays, lists, numbers and None (it may be hostile; do not load it with plain pickle)")
        return resolve()

    def persistent_load(self, pid):
        raise ValueError("refused a persistent id in the pickle: a features file holds only numpy arrays")


def safe_load(stream) -> Any:
    """The object of a pickle ``stream`` (a binary file), through ``SafeUnpickler``; a broken pickle is a
    one-line ValueError."""
    try:
        return SafeUnpickler(stream).load()
    except ValueError:
        raise
    except (pickle.UnpicklingError, EOFError, TypeError, AttributeError, IndexError, KeyError,
            UnicodeDecodeError, OverflowError, MemoryError) as err:
        text = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"not a readable pickle: {text}") from None


# ------------------------------------------------------------------ the file
@dataclass(frozen=True, eq=False)
class FeatureFile:
    """The arrays of a features file (checked by ``check_features``), its layout and the sha256 of its bytes.
    Labels are int64; ``class_names`` is a tuple (index = label) or None; ``query_codes`` / ``gallery_codes`` are
    the binary codes of the sake layout (None otherwise)."""
    query: np.ndarray
    query_labels: np.ndarray
    gallery: np.ndarray
    gallery_labels: np.ndarray
    class_names: tuple[str, ...] | None
    layout: str
    sha256: str
    path: Path
    query_codes: np.ndarray | None = field(default=None, repr=False)
    gallery_codes: np.ndarray | None = field(default=None, repr=False)

    @property
    def sizes(self) -> dict[str, int]:
        """n_query, n_gallery, dim and n_classes (distinct labels of queries and gallery together)."""
        return {"n_query": int(len(self.query)), "n_gallery": int(len(self.gallery)), "dim": int(self.query.shape[1]),
                "n_classes": int(len(np.union1d(self.query_labels, self.gallery_labels)))}


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _describe(obj: Any) -> str:
    """'a list of 6 items', 'a dict', 'a numpy array of shape (3, 4)'."""
    if isinstance(obj, (list, tuple)):
        return f"a {type(obj).__name__} of {len(obj)} item{'s' if len(obj) != 1 else ''}"
    if isinstance(obj, np.ndarray):
        return f"a numpy array of shape {obj.shape}"
    return f"a {type(obj).__name__}"


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) == b"PK\x03\x04"


def read_features(path: str | Path, layout: str = "auto") -> FeatureFile:
    """Read a features file of ``layout`` ("auto": an .npz (zip) file is npz, a pickle is clusterretri or sake by its
    number of items). Raises FileNotFoundError for a missing file and a one-line ValueError for anything else that
    is wrong (layout, refused pickle content, arrays: see ``check_features``)."""
    path = Path(path)
    if layout not in ("auto",) + LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; {_KNOWN_TEXT}, or auto")
    if not path.is_file():
        raise FileNotFoundError(f"no features file {path}")
    digest = sha256_of(path)
    if layout == "npz" or (layout == "auto" and _is_zip(path)):
        arrays = _read_npz(path)
        found = "npz"
    else:
        with open(path, "rb") as fh:
            obj = safe_load(fh)
        found = _pickle_layout(obj, layout)
        arrays = _from_list(obj, found)
    codes = {k: arrays.pop(k, None) for k in ("query_codes", "gallery_codes")}
    checked = check_features(**arrays)
    for key, value in codes.items():
        if value is not None:
            value = np.asarray(value)
            n = len(checked[key.replace("_codes", "")])
            if value.ndim != 2 or len(value) != n:
                raise ValueError(f"{key.replace('_', ' ')} have shape {value.shape}, expected {n} rows of codes")
        codes[key] = value
    return FeatureFile(**checked, layout=found, sha256=digest, path=path, **codes)


def _pickle_layout(obj: Any, layout: str) -> str:
    n = len(obj) if isinstance(obj, (list, tuple)) else None
    if layout == "auto":
        for name, items in LAYOUT_ITEMS.items():
            if n == items:
                return name
        raise ValueError(f"unknown features file layout: {_KNOWN_TEXT}; found {_describe(obj)}")
    if n != LAYOUT_ITEMS[layout]:
        raise ValueError(f"layout {layout} is a pickled list of {LAYOUT_ITEMS[layout]} items, found {_describe(obj)} "
                         f"({_KNOWN_TEXT})")
    return layout


def _from_list(obj: Sequence, layout: str) -> dict[str, Any]:
    if layout == "clusterretri":
        gallery, gallery_labels, query, query_labels, _scores = obj
        return {"query": query, "query_labels": query_labels, "gallery": gallery, "gallery_labels": gallery_labels}
    gallery, gallery_codes, gallery_labels, query, query_codes, query_labels, _scores, _binary_scores = obj
    return {"query": query, "query_labels": query_labels, "gallery": gallery, "gallery_labels": gallery_labels,
            "query_codes": query_codes, "gallery_codes": gallery_codes}


def _read_npz(path: Path) -> dict[str, Any]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in NPZ_KEYS if k not in npz.files]
            if missing:
                raise ValueError(f"npz features file {path.name} lacks arrays {missing} (it holds {sorted(npz.files)}; "
                                 f"expected {list(NPZ_KEYS)} and optionally class_names)")
            arrays = {k: npz[k] for k in NPZ_KEYS}
            names = npz["class_names"] if "class_names" in npz.files else None
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise ValueError(f"{path.name} is not a readable npz file: {str(err).splitlines()[0] if str(err) else err!r}") \
            from None
    except ValueError as err:
        text = str(err).splitlines()[0]
        if "allow_pickle" in text:  # an object array: would need pickle
            raise ValueError(f"npz features file {path.name} holds an object array (pickled data), refused: "
                             "store numbers and strings only") from None
        raise
    if names is not None:
        if names.ndim != 1 or names.dtype.kind not in "US":
            raise ValueError(f"class_names must be a 1-D array of strings, got dtype {names.dtype} shape {names.shape}")
        names = tuple(str(n) for n in names)
    return {**arrays, "class_names": names}


# ------------------------------------------------------------------ checks
def _features(x: Any, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind not in "fiub":
        raise ValueError(f"{what} features must be numbers, got dtype {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"{what} features must be 2-D (items x dimensions), got shape {x.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{what} features are empty (shape {x.shape})")
    if x.dtype.kind != "f":
        x = x.astype(np.float32)
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        raise ValueError(f"{what} features row {int(np.flatnonzero(~finite)[0])} is not finite (NaN or infinite; "
                         f"{int((~finite).sum())} such rows)")
    return x


def _labels(y: Any, what: str, n: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{what} labels must be 1-D, got shape {y.shape}")
    if y.dtype.kind not in "iu":
        raise ValueError(f"{what} labels must be integers (class indices), got dtype {y.dtype}")
    if len(y) != n:
        raise ValueError(f"{what} features and labels differ in length: {n} feature rows, {len(y)} labels")
    return y.astype(np.int64)


def check_features(query, query_labels, gallery, gallery_labels, class_names=None) -> dict[str, Any]:
    """The arrays as read (features 2-D floating point, labels 1-D int64, class names a tuple or None), or a one-line
    ValueError: non-2-D or empty features, NaN / infinite rows (naming the first and its array), lengths of features
    and labels that differ, query and gallery of different widths, labels outside the class names, a query class
    with no gallery item (named)."""
    q, g = _features(query, "query"), _features(gallery, "gallery")
    ql, gl = _labels(query_labels, "query", len(q)), _labels(gallery_labels, "gallery", len(g))
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"query and gallery features differ in width: {q.shape[1]} and {g.shape[1]} dimensions")
    names = None if class_names is None else tuple(str(c) for c in class_names)
    if names is not None:
        for what, y in (("query", ql), ("gallery", gl)):
            bad = y[(y < 0) | (y >= len(names))]
            if len(bad):
                raise ValueError(f"{what} labels hold {int(bad[0])}, outside the {len(names)} class names "
                                 f"(labels 0..{len(names) - 1})")
    missing = np.setdiff1d(ql, gl)
    if len(missing):
        c = int(missing[0])
        shown = f"{c} ({names[c]!r})" if names is not None else f"{c}"
        raise ValueError(f"query class {shown} has no gallery item ({len(missing)} query classes have none): "
                         "its queries could not find anything relevant")
    return {"query": q, "query_labels": ql, "gallery": g, "gallery_labels": gl, "class_names": names}


# ------------------------------------------------------------------ writing
def sign_codes(features: np.ndarray) -> np.ndarray:
    """The binary codes written into the sake layout: ``features > 0`` as uint8 (the sign of each dimension of the
    features themselves, no learned rotation; SAKE's own files hold ITQ codes)."""
    return (np.asarray(features) > 0).astype(np.uint8)


def write_features(path: str | Path, layout: str, query, query_labels, gallery, gallery_labels,
                   class_names: Sequence[str] | None = None) -> Path:
    """Write the arrays (checked by ``check_features`` first: nothing is written if they fail) as a features file of
    ``layout``, atomically (a temporary file renamed into place). clusterretri: scores None; sake: the binary codes
    are ``sign_codes`` of the features, scores and binary scores None; npz: the arrays, and ``class_names`` when
    given. The pickle layouts hold no class names (they are only checked against the labels)."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; {_KNOWN_TEXT}")
    a = check_features(query, query_labels, gallery, gallery_labels, class_names)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            if layout == "npz":
                extra = {} if a["class_names"] is None else {"class_names": np.asarray(a["class_names"], dtype=str)}
                np.savez(fh, query=a["query"], query_labels=a["query_labels"], gallery=a["gallery"],
                         gallery_labels=a["gallery_labels"], **extra)
            elif layout == "clusterretri":
                pickle.dump([a["gallery"], a["gallery_labels"], a["query"], a["query_labels"], None], fh,
                            protocol=PICKLE_PROTOCOL)
            else:
                pickle.dump([a["gallery"], sign_codes(a["gallery"]), a["gallery_labels"], a["query"],
                             sign_codes(a["query"]), a["query_labels"], None, None], fh, protocol=PICKLE_PROTOCOL)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
