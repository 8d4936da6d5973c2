"""Where each benchmark's images live on disk, in every layout the releases use.

A layout is a set of roles (``sketch``, ``photo``, ``extended_photo``), each a list of candidate folders (relative
to the data set root) holding one sub-folder per class. The first candidate that exists wins, so the SAKE repack
(``..._ready`` folders), the original archives and the folder-scan layouts of Sem-PCYC/Doodle2Search all work.
"""
from __future__ import annotations

import shutil
import tarfile
import zlib
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
SEARCH_DEPTH = 3  # how deep below a source folder a layout folder is looked for


@dataclass(frozen=True)
class Role:
    name: str
    domain: str  # "sketch" or "photo"
    candidates: tuple[str, ...]


_SKETCHY = (Role("sketch", "sketch", ("256x256/sketch/tx_000000000000_ready", "256x256/sketch/tx_000000000000",
                                       "sketch")),
            Role("photo", "photo", ("256x256/photo/tx_000000000000_ready", "256x256/photo/tx_000000000000", "photo")),
            Role("extended_photo", "photo", ("EXTEND_image_sketchy_ready", "EXTEND_image_sketchy", "extended_photo")))
LAYOUTS: dict[str, tuple[Role, ...]] = {
    "Sketchy": _SKETCHY,
    "TUBerlin": (Role("sketch", "sketch", ("png_ready", "png", "sketch")),
                 Role("photo", "photo", ("ImageResized_ready", "ImageResized", "photo", "extended_photo"))),
    "QuickDraw": (Role("sketch", "sketch", ("sketches", "QuickDraw_sketches_final", "sketch")),
                  Role("photo", "photo", ("images", "QuickDraw_images_final", "photo"))),
}


def layout_of(folder: str) -> tuple[Role, ...]:
    """The roles of a benchmark folder (``Benchmark.folder``)."""
    if folder not in LAYOUTS:
        raise ValueError(f"no known archive layout for {folder!r}; known: {sorted(LAYOUTS)}")
    return LAYOUTS[folder]


def find_roles(root: Path, roles: tuple[Role, ...]) -> dict[str, str]:
    """{role name: candidate folder found under root} for the roles present."""
    found = {}
    for role in roles:
        hit = next((c for c in role.candidates if (root / c).is_dir()), None)
        if hit is not None:
            found[role.name] = hit
    return found


def locate(source: Path, rel: str, depth: int = SEARCH_DEPTH) -> Path | None:
    """The folder ``<source>/[<up to depth folders>/]<rel>`` (an unpacked archive often adds a top folder),
    or ``source`` itself when it is such a folder."""
    level = [source]
    for _ in range(depth + 1):
        for base in level:
            if (base / rel).is_dir():
                return base / rel
        level = [d for base in level for d in sorted(base.iterdir()) if d.is_dir() and not d.is_symlink()]
    return source if source.is_dir() and source.absolute().as_posix().endswith("/" + rel) else None


def class_folders(folder: Path) -> dict[str, list[str]]:
    """{class folder name: sorted image file names} of a folder with one sub-folder per class."""
    out = {}
    for d in sorted(p for p in folder.iterdir() if p.is_dir()):
        out[d.name] = sorted(f.name for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
    return out


def _safe_member(dest: Path, name: str) -> Path:
    rel = PurePosixPath(name.replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts:
        raise ValueError(f"refusing to extract {name!r}: the path leaves the destination folder")
    return dest / rel


ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


def extract(archive: Path, dest: Path) -> Path:
    """Unpack a zip or tar archive into ``dest`` (paths checked: nothing is written outside it). Idempotent."""
    done = dest / ".extracted"
    if done.is_file():
        return dest
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    _safe_member(tmp, info.filename)
                zf.extractall(tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                members = tf.getmembers()
                for m in members:
                    _safe_member(tmp, m.name)
                    if not (m.isfile() or m.isdir()):
                        raise ValueError(f"refusing to extract {m.name!r} from {archive}: links and devices are not "
                                         "allowed")
                tf.extractall(tmp, members=members, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
        elif archive.name.lower().endswith(ARCHIVE_SUFFIXES):
            raise ValueError(f"{archive} is damaged or incomplete (not readable as a zip or tar archive): download "
                             "it again (`zssbir data download` resumes a partial file) and compare its size with the "
                             "published one")
        else:
            raise ValueError(f"{archive} is neither a zip nor a tar archive")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, OSError) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ValueError(f"{archive} is damaged or incomplete ({type(err).__name__}: {err}): download it again "
                         "(`zssbir data download` resumes a partial file) and compare its size with the published "
                         "one") from err
    except ValueError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    done.write_text(str(archive), encoding="utf-8")
    return dest


def link_into(root: Path, rel: str, target: Path) -> None:
    """Make ``root/rel`` point at ``target``: a symlink at the shallowest part of ``rel`` not yet in root.

    The user's source stays where it is, untouched; nothing is moved or deleted.
    """
    parts = PurePosixPath(rel).parts
    for i in range(1, len(parts) + 1):
        here = root.joinpath(*parts[:i])
        if here.is_symlink() and i < len(parts):
            raise ValueError(f"cannot place {rel} under {root}: {here} is a link into another folder; "
                             f"unpack the archives into one folder and pass that folder as --source")
        if not here.exists():
            here.parent.mkdir(parents=True, exist_ok=True)
            here.symlink_to(target.absolute().parents[len(parts) - i - 1] if i < len(parts) else target.absolute(),
                            target_is_directory=True)
            return
