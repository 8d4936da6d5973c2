"""Getting data sets ready: generate the procedural ones, check that real ones are in place."""
from __future__ import annotations

from pathlib import Path

from .benchmarks import get_benchmark
from .datasets import MissingDataError, load_split, missing_data_message


def ensure_dataset(dataset_id: str, *, data_root: str | Path | None = None, progress: bool = False,
                   check_files: bool = True) -> Path:
    """Return the root of a ready data set: generated if procedural, checked if real.

    A real benchmark that is not in place raises MissingDataError saying what is missing (lists first, then
    the listed files of every split unless ``check_files`` is False), where it was looked for, and how to get it.
    """
    bench = get_benchmark(dataset_id)
    root = bench.root(data_root)
    if bench.generator is not None:
        from .synthetic import SyntheticConfig, ensure_synthetic

        return ensure_synthetic(root, SyntheticConfig(**bench.generator), progress=progress)
    needed = [bench.class_file("train", data_root), bench.class_file("zero", data_root)]
    needed += [bench.list_path(d, s, data_root) for d in ("sketch", "photo") for s in ("train", "val", "zero")]
    missing = sorted({str(p) for p in needed if not p.is_file()})
    if missing:
        raise MissingDataError(missing_data_message(bench, f"not ready under {root}; {len(missing)} list files "
                                                    "are missing", missing, root))
    for split in ("train", "val", "zero"):
        for domain in ("sketch", "photo"):
            load_split(dataset_id, split, domain, data_root=data_root, check_files=check_files)
    return root
