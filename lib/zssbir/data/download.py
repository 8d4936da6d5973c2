"""`zssbir data download`: fetch a benchmark's public archives with progress, resume and a SHA-256 manifest.

Archives go to ``<data_root>/downloads/`` (shared: the SAKE repack serves both Sketchy and TU-Berlin), and
``<data_root>/downloads/manifest.json`` records url, file, size, sha256 and date of each on first download;
later runs check the file against it. An interrupted download continues from its ``.part`` file with an HTTP
Range request. No source publishes sizes or checksums, hence the record-on-first-download manifest.
Google Drive repacks cannot be fetched by plain HTTP: fetch them by hand and run `zssbir data prepare`.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

from tqdm.auto import tqdm

from .. import paths
from .benchmarks import get_benchmark

_SAKE = "https://cs.jhu.edu/~qliu24/ZSSBIR/dataset.zip"
SOURCES: dict[str, list[str]] = {
    "sketchy_ext_split1": [_SAKE],
    "sketchy_ext_split2": [_SAKE],
    "tuberlin_ext": [_SAKE, "https://cybertron.cg.tu-berlin.de/eitz/projects/classifysketch/sketches_png.zip"],
    "quickdraw_ext": ["https://datasets.cvc.uab.es/QuickDraw/QuickDraw_sketches_final.zip",
                      "https://datasets.cvc.uab.es/QuickDraw/QuickDraw_images_final.zip"],
}
BY_HAND = ("Other copies (the Sketchy project page sketchy.eye.gatech.edu; the Google Drive repacks of the Deep "
           "Sketch Hashing, ZSE-SBIR and Sketch-LVM authors) cannot be fetched by plain HTTP: download them in a "
           "browser, then run `zssbir data prepare {id} --source <archive or folder>`.")
CHUNK = 1 << 16
RETRIES = 5


class DownloadError(RuntimeError):
    """A download failed or no longer matches its recorded checksum."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fetch_once(url: str, part: Path, progress: bool, timeout: float) -> bool:
    """Append to ``part`` from where it stops; True when the server says the file is complete."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # nothing left to send: the part file is whole
            return True
        raise
    with response:
        if have and response.status != 206:  # the server ignored the Range: start again
            have = 0
        total = response.headers.get("Content-Length")
        total = have + int(total) if total is not None else None
        with part.open("ab" if have else "wb") as out, \
                tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=part.stem, disable=not progress) as bar:
            while block := response.read(CHUNK):
                out.write(block)
                bar.update(len(block))
    return total is None or part.stat().st_size >= total


def fetch(url: str, dest: Path, *, progress: bool = True, timeout: float = 60) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming after a dropped connection."""
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(RETRIES):
        try:
            if _fetch_once(url, part, progress, timeout):
                part.replace(dest)
                return dest
        except (http.client.IncompleteRead, ConnectionError, TimeoutError, urllib.error.URLError) as err:
            if isinstance(err, urllib.error.HTTPError) or attempt == RETRIES - 1:
                raise DownloadError(f"cannot download {url}: {err}. The partial file {part} is kept; run the "
                                    f"command again to resume") from err
    raise DownloadError(f"cannot download {url}: the connection kept dropping; run the command again to resume "
                        f"from {part}")


def _check_manifest(manifest: dict, url: str, dest: Path) -> None:
    entry = manifest.get(dest.name)
    if entry is None:
        manifest[dest.name] = {"url": url, "file": str(dest), "size": dest.stat().st_size, "sha256": sha256(dest),
                               "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    elif sha256(dest) != entry["sha256"]:
        raise DownloadError(f"{dest} has changed since it was first downloaded on {entry['date']} (sha256 "
                            f"{entry['sha256']}): delete it and run the command again; if the source itself "
                            f"changed on purpose, also remove its entry from the manifest")


def download(dataset_id: str, *, data_root: str | Path | None = None, urls: list[str] | None = None,
             base_url: str | None = None, progress: bool = True) -> list[Path]:
    """Fetch (or check) every archive of a dataset id; returns their paths. ``base_url`` replaces the
    folder part of each source URL (mirrors, tests); ``urls`` replaces the sources."""
    get_benchmark(dataset_id)
    urls = list(urls or SOURCES.get(dataset_id, []))
    if not urls:
        raise ValueError(f"no download source for {dataset_id!r}; " + BY_HAND.format(id=dataset_id))
    if base_url:
        urls = [base_url.rstrip("/") + "/" + u.rsplit("/", 1)[-1] for u in urls]
    folder = Path(data_root) if data_root is not None else paths.data_dir()
    manifest_path = folder / "downloads" / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.is_file() else {}
    out = []
    for url in urls:
        dest = folder / "downloads" / url.rsplit("/", 1)[-1]
        if not dest.is_file():
            fetch(url, dest, progress=progress)
        _check_manifest(manifest, url, dest)
        manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
        out.append(dest)
    return out
