"""Tiny trees in the official layouts of the real benchmarks (a few classes, 8x8 images)."""
from __future__ import annotations

import zipfile
from pathlib import Path

from PIL import Image

from zssbir.data.lists import Entry, write_class_ids, write_list
from zssbir.data.splits import SplitClasses

# split-file names as committed (Sketchy underscores, TU-Berlin spaces, QuickDraw underscores)
SKETCHY = SplitClasses(seen=("cat", "hot-air_balloon", "car_(sedan)"), unseen=("teddy_bear", "wine_bottle"))
TUBERLIN = SplitClasses(seen=("bear (animal)", "hot air balloon", "cat"), unseen=("t-shirt", "frying-pan"))
QUICKDRAW = SplitClasses(seen=("cat", "alarm_clock", "duck"), unseen=("palm_tree", "fire_hydrant"))


def image(path: Path, colour=(255, 255, 255), size: int = 8) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), colour).save(path)
    return path.name


def sketchy_original(base: Path, classes=SKETCHY, photos: int = 3, sketches: int = 2, extended: bool = True) -> Path:
    """``256x256/{sketch,photo}/tx_000000000000/<cls>/`` plus ``EXTEND_image_sketchy/<cls>/`` (ext_*.jpg and
    the originals again, as in the released extension)."""
    for c, cls in enumerate(classes.all):
        for i in range(photos):
            pid = f"n0{c}_{i}"
            image(base / f"256x256/photo/tx_000000000000/{cls}/{pid}.jpg", (200, 20 * c, 90))
            for k in range(1, sketches + 1):
                image(base / f"256x256/sketch/tx_000000000000/{cls}/{pid}-{k}.png")
            if extended:
                image(base / f"EXTEND_image_sketchy/{cls}/{pid}.jpg", (200, 20 * c, 90))
                image(base / f"EXTEND_image_sketchy/{cls}/ext_{i + 1}.jpg", (20, 20 * c, 200))
    return base


def sketchy_sake(base: Path, classes=SKETCHY, list_dir: str = "zeroshot1") -> Path:
    """The SAKE repack: ``_ready`` folders and published lists whose photo lists name the originals twice."""
    root = base / "dataset" / "Sketchy"
    sketchy_original(root, classes)
    for a, b in (("256x256/photo/tx_000000000000", "256x256/photo/tx_000000000000_ready"),
                 ("256x256/sketch/tx_000000000000", "256x256/sketch/tx_000000000000_ready"),
                 ("EXTEND_image_sketchy", "EXTEND_image_sketchy_ready")):
        (root / a).rename(root / b)
    lists = {k: [] for k in ("s_train", "s_test", "s_zero", "p_train", "p_zero")}
    for names, split in ((classes.seen, "train"), (classes.unseen, "zero")):
        for y, cls in enumerate(names):
            for folder in ("256x256/photo/tx_000000000000_ready", "EXTEND_image_sketchy_ready"):
                files = sorted((root / folder / cls).iterdir())
                lists[f"p_{split}"] += [Entry(f"{folder}/{cls}/{p.name}", y) for p in files]
            sk = sorted((root / "256x256/sketch/tx_000000000000_ready" / cls).iterdir())
            for j, p in enumerate(sk):
                key = "s_zero" if split == "zero" else ("s_test" if j == 0 else "s_train")
                lists[key].append(Entry(f"256x256/sketch/tx_000000000000_ready/{cls}/{p.name}", y))
    z = root / list_dir
    write_class_ids(z / "cname_cid.txt", list(classes.seen))
    write_class_ids(z / "cname_cid_zero.txt", list(classes.unseen))
    for key, name in (("s_train", "sketch_tx_000000000000_ready_filelist_train.txt"),
                      ("s_test", "sketch_tx_000000000000_ready_filelist_test.txt"),
                      ("s_zero", "sketch_tx_000000000000_ready_filelist_zero.txt"),
                      ("p_train", "all_photo_filelist_train.txt"), ("p_zero", "all_photo_filelist_zero.txt")):
        write_list(z / name, lists[key])
    return base


def tuberlin(base: Path, classes=TUBERLIN, misspelled: dict | None = None) -> Path:
    """``png/<cls>/<n>.png`` (sketches_png.zip) and ``ImageResized/<cls>/*.JPEG``; image folders may be misspelled
    or unqualified ("bear" for "bear (animal)")."""
    misspelled = {"hot air balloon": "hot air baloon", "bear (animal)": "bear"} if misspelled is None else misspelled
    n = 0
    for c, cls in enumerate(classes.all):
        for i in range(3):
            n += 1
            image(base / f"png/{cls}/{n}.png")
            image(base / f"ImageResized/{misspelled.get(cls, cls)}/img_{i}.JPEG", (10 * c, 100, 50))
    return base


def quickdraw(base: Path, classes=QUICKDRAW) -> Path:
    """``QuickDraw_sketches_final/<cls>/<key>.png`` (5 a class) and ``QuickDraw_images_final/<cls>/image_<n>.jpg``
    (3 a class)."""
    for c, cls in enumerate(classes.all):
        for i in range(5):
            image(base / f"QuickDraw_sketches_final/{cls}/{5000 + 10 * c + i}.png")
        for i in range(3):
            image(base / f"QuickDraw_images_final/{cls}/image_{i:05d}.jpg", (10 * c, 50, 100))
    return base


def zip_folder(folder: Path, archive: Path, extra: bytes = b"") -> Path:
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder.parent).as_posix())
        if extra:
            zf.writestr(f"{folder.name}/padding.bin", extra)
    return archive


# --- trees as users bring them: other list names, missing parts, broken files, odd class names ---

# class names as releases spell them: spaces, hyphens, parentheses, capitals
ODD = SplitClasses(seen=("Hot Air-Balloon", "car (sedan)", "cat"), unseen=("teddy bear", "Wine-Bottle"))
SKETCHY_LISTS = {"s_train": "sketch_tx_000000000000_ready_filelist_train.txt",
                 "s_test": "sketch_tx_000000000000_ready_filelist_test.txt",
                 "s_zero": "sketch_tx_000000000000_ready_filelist_zero.txt",
                 "p_train": "all_photo_filelist_train.txt", "p_zero": "all_photo_filelist_zero.txt"}


def noise_image(path: Path, seed: int = 0, size: int = 32) -> Path:
    """An image of random pixels (a truncated copy of it cannot decode; a flat one sometimes can)."""
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def break_file(path: Path, how: str) -> Path:
    """Break an image the ways real downloads are broken: "truncated" (the first half of its bytes, after
    making it a noisy image of its format), "empty" (0 bytes), "text" (a text file under the image's name)."""
    if how == "truncated":
        noise_image(path, seed=len(path.name))
        data = path.read_bytes()
        path.write_bytes(data[:len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "text":
        path.write_text("<html><body>404 Not Found</body></html>\n")
    else:
        raise ValueError(how)
    return path


def sketchy_published(base: Path, classes=SKETCHY, *, list_dir: str = "zeroshot1", ready: bool = True,
                      names: dict | None = None, val: bool = True, extended: bool = True) -> Path:
    """A Sketchy download with published lists: the SAKE repack (``ready=True``: ``_ready`` folders) or the original
    folders (``ready=False``: ``tx_000000000000``, ``EXTEND_image_sketchy``), lists in ``<base>/Sketchy/<list_dir>``
    named ``names`` (keys of ``SKETCHY_LISTS``; a name None leaves that list out), without the held-out list when
    ``val`` is False (ZSE-SBIR). Photo lists name the originals twice when the extension is there (as SAKE's do)."""
    root = base / "Sketchy"
    sketchy_original(root, classes, extended=extended)
    suffix = "_ready" if ready else ""
    folders = {"photo": "256x256/photo/tx_000000000000", "sketch": "256x256/sketch/tx_000000000000",
               "ext": "EXTEND_image_sketchy"}
    if ready:
        for key, rel in folders.items():
            if (root / rel).is_dir():
                (root / rel).rename(root / (rel + suffix))
        folders = {k: v + suffix for k, v in folders.items()}
    lists = {k: [] for k in SKETCHY_LISTS}
    for names_, split in ((classes.seen, "train"), (classes.unseen, "zero")):
        for y, cls in enumerate(names_):
            for folder in (folders["photo"], folders["ext"]):
                if (root / folder / cls).is_dir():
                    lists[f"p_{split}"] += [Entry(f"{folder}/{cls}/{p.name}", y)
                                            for p in sorted((root / folder / cls).iterdir())]
            for j, p in enumerate(sorted((root / folders["sketch"] / cls).iterdir())):
                key = "s_zero" if split == "zero" else ("s_test" if j == 0 and val else "s_train")
                lists[key].append(Entry(f"{folders['sketch']}/{cls}/{p.name}", y))
    z = root / list_dir
    write_class_ids(z / "cname_cid.txt", list(classes.seen))
    write_class_ids(z / "cname_cid_zero.txt", list(classes.unseen))
    names = {**SKETCHY_LISTS, **(names or {})}
    if not val:
        names["s_test"] = None
    for key, name in names.items():
        if name is not None:
            write_list(z / name, lists[key])
    return base


def tree_state(folder: Path) -> list[tuple[str, int, str]]:
    """(relative path, size, kind) of everything under a folder, links not followed: to prove nothing changed."""
    import hashlib

    out = []
    for p in sorted(folder.rglob("*")):
        if p.is_symlink():
            out.append((p.relative_to(folder).as_posix(), 0, "link"))
        elif p.is_file():
            out.append((p.relative_to(folder).as_posix(), p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest()))
    return out
