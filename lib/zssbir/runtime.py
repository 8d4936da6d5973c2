"""Seeds, devices, thread counts and run metadata: the one place randomness and hardware are decided."""
from __future__ import annotations

import math
import os
import platform
import random
import subprocess
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

_VERSIONED = ("zssbir", "torch", "torchvision", "open_clip_torch", "faiss-cpu", "numpy", "scikit-learn",
              "umap-learn", "pillow")


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch (all devices); return a torch Generator seeded the same.

    Use the returned generator (or ``make_generator``) for DataLoaders and samplers, and
    ``np.random.default_rng(seed)`` for numpy code, rather than the global states.
    """
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return make_generator(seed)


@contextmanager
def torch_threads(n: int | None):
    """Hold torch's intra-op thread count at ``n`` inside the block (None: leave it); the previous count is restored."""
    previous = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def make_generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' picks CUDA, then Apple MPS, then CPU; anything else is checked to exist.

    The environment variable ZSSBIR_DEVICE, when set (e.g. "cpu"), is what 'auto' means instead; it
    reaches subprocesses (torchrun ranks, notebook kernels), which is how the tests keep to the CPU.
    """
    if isinstance(device, torch.device):
        return device
    if device == "auto" and os.environ.get("ZSSBIR_DEVICE", "auto").strip() not in ("", "auto"):
        device = os.environ["ZSSBIR_DEVICE"].strip()
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available; use device='auto' or 'cpu'.")
    return dev


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype to use on this device, or None where AMP is not worth it (CPU)."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None


def git_commit() -> str | None:
    from .paths import project_root

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project_root(), capture_output=True,
                             text=True, timeout=10)
    except (OSError, RuntimeError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=project_root(),
                           capture_output=True, text=True, timeout=10).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions["python"] = platform.python_version()
    return versions


def run_metadata(device: str | torch.device = "auto") -> dict:
    dev = resolve_device(device)
    return {
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "hostname": platform.node(),
        "pid": os.getpid(),
        "git_commit": git_commit(),
        "versions": package_versions(),
    }


def distributed_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) when not launched by it."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def init_distributed(device: torch.device) -> tuple[int, int]:
    """Join the torchrun process group (gloo on CPU, nccl on CUDA) if launched by torchrun; return (rank, world)."""
    rank, world, local = distributed_env()
    if world > 1 and not torch.distributed.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(local)
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world


# ------------------------------------------------------------------------------------------------------ threads
# Issue 24: the one place that chooses thread counts. What was measured on the project's 2-core machine shared with
# other users (quick checks of a few seconds each, whose "quiet" still had the other users' varying load;
# bench/bench_contention.py is the measurement):
#
# * faiss's k-means degrades under load because of OpenMP barriers, not work. A Lloyd iteration is a dozen short
#   OpenMP parallel regions (the BLAS blocks of the assignment, the argmin, the centroid update): by faiss's code
#   some 50,000 for one seed of the 35-point grid (217 sub-space fits x 20 iterations). Each ends at a barrier; with 2 threads on 2 cores shared with busy processes one of
#   the pair is often descheduled while the other waits for it, spinning through its time slice (GNU OpenMP waits
#   busily by default), so a region costs a scheduler slice instead of its work. Three grid fits at Sketchy size
#   ((M, K) = (1, 256), (4, 32), (16, 8); 17,101 x 512) beside 4 busy processes: 2 threads 1.2 s quiet -> 31 s
#   (25x; 12.7 s of process CPU for 2.3 s of work: spinning); 2 threads with OMP_WAIT_POLICY=PASSIVE 1.4 s -> 8.8 s
#   (6x, no spinning, but every region still waits for a sleeping thread to be scheduled); 1 thread 1.7 s -> 4.6 s
#   (2.8x: its fair share of the cores, no barrier at all). On 1,710 points the 2-thread fits went 0.5 s -> 18 s.
# * A second thread buys k-means little even on a quiet machine: 1.0x - 1.55x per fit at Sketchy size (9 grid points,
#   5.2 s on 1 thread, 3.9 s on 2). So k-means (and the codes' encoding that ends a fit) runs on KMEANS_THREADS = 1
#   by default (``kmeans_threads``, ``openmp_threads``); ZSSBIR_KMEANS_THREADS or configure_threads(kmeans=...) give
#   it more. The thread count changes how, never what: centroids and codes are identical for 1 and 2 threads.
# * faiss and torch share ONE OpenMP runtime once torch is imported first (as every zssbir module does): faiss's
#   wheel brings its own libgomp, but its calls bind to torch's, loaded globally before it. So
#   faiss.omp_set_num_threads(n) also sets torch's thread count and torch.set_num_threads(n) faiss's; a count for
#   k-means alone must be held around the fit and restored (``openmp_threads``). ``thread_settings`` reports it.
# * OMP_WAIT_POLICY=PASSIVE (or GOMP_SPINCOUNT=0) stops the spinning but is read only when the OpenMP runtime
#   loads, i.e. when torch is imported: set in os.environ after that (even before faiss's import) it changes
#   nothing. Measured as the CPU a process burns in a 200 ms sleep after a 2-thread faiss k-means: 2 - 4 ms unset or
#   set after torch's import, 0.1 ms set before it (in os.environ before any import of torch, or exported). As
#   nothing in the package runs before its callers import torch, and passive waiting still left 2-thread k-means 6x
#   slower under load and slowed small 2-thread fits quiet (1,710 points: 0.47 s -> 0.70 s), the package does not
#   set it; export it before starting python to try it (bench/bench_contention.py prints it).
#   KMP_BLOCKTIME is Intel's / LLVM's OpenMP: neither is loaded here (torch and faiss use GNU libgomp), no effect.
THREADS_ENV = "ZSSBIR_THREADS"  # the thread budget (torch's intra-op threads, faiss's OpenMP threads)
KMEANS_THREADS_ENV = "ZSSBIR_KMEANS_THREADS"  # threads of a k-means fit (ClusterIndex.fit)
KMEANS_THREADS = 1  # the k-means default (see above)
CGROUP_ROOT = Path("/sys/fs/cgroup")
SELF_CGROUP = Path("/proc/self/cgroup")
_CONFIGURED: dict | None = None  # what configure_threads set last in this process


def _positive_count(n, what: str) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{what} must be a positive int, got {n!r}")
    return int(n)


def _env_count(name: str) -> int | None:
    """A positive thread count from the environment variable ``name``; None when unset, empty or "auto"."""
    raw = os.environ.get(name, "").strip()
    if raw.lower() in ("", "auto"):
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{name}={raw!r} is not a thread count: expected a positive whole number, or unset it "
                         "(or 'auto') for the CPUs this process may use")
    return value


def affinity_cpus() -> tuple[int, str]:
    """(number of CPUs this process may run on, where it came from): ``os.sched_getaffinity(0)`` where the
    platform has it ("affinity"), else ``os.cpu_count()`` ("os.cpu_count")."""
    getaffinity = getattr(os, "sched_getaffinity", None)
    if getaffinity is not None:
        try:
            return max(1, len(getaffinity(0))), "affinity"
        except OSError:
            pass
    return max(1, os.cpu_count() or 1), "os.cpu_count"


def _quota_in(folder: Path) -> float | None:
    """CPUs granted by the CFS quota of one cgroup folder: cgroup v2 ``cpu.max`` ("quota period" or "max period"),
    else cgroup v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (quota -1: none). None where there is none."""
    try:
        fields = (folder / "cpu.max").read_text().split()
    except OSError:
        fields = None
    try:
        if fields is not None:
            quota, period = (None, None) if not fields or fields[0] == "max" else (int(fields[0]), int(fields[1]))
        else:
            quota = int((folder / "cpu.cfs_quota_us").read_text())
            period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError, IndexError):
        return None
    return quota / period if quota is not None and quota > 0 and period > 0 else None


def cgroup_cpu_quota(root: Path | str = CGROUP_ROOT, self_cgroup: Path | str = SELF_CGROUP) -> float | None:
    """The smallest CPU quota (in CPUs, e.g. 1.5) of this process's cgroup and its parents, cgroup v2 or v1, as far
    as they are visible under ``root``; None where no quota applies (or no cgroup file is readable).

    The process's cgroup is read from ``self_cgroup`` (/proc/self/cgroup): the "0::path" line (v2) and the line
    of the v1 "cpu" controller; its folder and every parent up to the mount are read, the mount itself included
    (inside a container that is the container's own cgroup)."""
    root = Path(root)
    v1_mounts = [root / name for name in ("cpu", "cpu,cpuacct", "cpuacct,cpu")]
    own = {}
    try:
        lines = Path(self_cgroup).read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[1] == "":
            own[root] = parts[2]
        elif "cpu" in parts[1].split(","):
            own.update(dict.fromkeys(v1_mounts, parts[2]))
    quotas = []
    for mount in [root, *v1_mounts]:
        rel = [p for p in own.get(mount, "/").split("/") if p and p != ".."]
        for depth in range(len(rel), -1, -1):
            quota = _quota_in(mount.joinpath(*rel[:depth]))
            if quota is not None:
                quotas.append(quota)
    return min(quotas) if quotas else None


def thread_budget(n: int | None = None, *, cgroup_root: Path | str = CGROUP_ROOT,
                  self_cgroup: Path | str = SELF_CGROUP) -> dict:
    """The number of threads this process should use and where it came from.

    ``threads``: ``n`` if given (source "argument"), else the environment variable ZSSBIR_THREADS (a positive whole
    number; empty or "auto" counts as unset; anything else is a ValueError), else the CPUs this process may use:
    its CPU affinity (``os.sched_getaffinity``), capped by the cgroup CPU quota rounded up (``cgroup_cpu_quota``;
    a 1.5-CPU quota gives 2), at least 1 -- NOT ``os.cpu_count()``, which counts the host's CPUs.
    Also returned: ``source``, ``affinity`` (CPU count), ``cgroup_quota`` (CPUs or None)."""
    affinity, how = affinity_cpus()
    quota = cgroup_cpu_quota(cgroup_root, self_cgroup)
    env = _env_count(THREADS_ENV)
    if n is not None:
        threads, source = _positive_count(n, "threads"), "argument"
    elif env is not None:
        threads, source = env, f"env {THREADS_ENV}"
    elif quota is not None and math.ceil(quota) < affinity:
        threads, source = max(1, math.ceil(quota)), "cgroup quota"
    else:
        threads, source = affinity, how
    return {"threads": threads, "source": source, "affinity": affinity, "cgroup_quota": quota}


def cpu_budget(n: int | None = None, **where) -> int:
    """The CPUs this process may use (``thread_budget(n)["threads"]``): affinity capped by the cgroup quota,
    overridden by ZSSBIR_THREADS, overridden by ``n``."""
    return thread_budget(n, **where)["threads"]


def _faiss():
    try:
        import faiss
    except ImportError:  # pragma: no cover - faiss-cpu is a dependency
        return None
    return faiss


def _kmeans_choice(n: int | None = None, configured: bool = True) -> tuple[int, str]:
    if n is not None:
        return _positive_count(n, "kmeans threads"), "argument"
    env = _env_count(KMEANS_THREADS_ENV)
    if env is not None:
        return env, f"env {KMEANS_THREADS_ENV}"
    if configured and _CONFIGURED is not None:
        return _CONFIGURED["kmeans_threads"], _CONFIGURED["kmeans_source"]
    return KMEANS_THREADS, "default"


def kmeans_threads() -> int:
    """Threads of a k-means fit (``ClusterIndex.fit``): ZSSBIR_KMEANS_THREADS, else what ``configure_threads(kmeans=)``
    set, else ``KMEANS_THREADS`` (1: on cores shared with other work, OpenMP k-means on more threads collapses;
    see the notes above)."""
    return _kmeans_choice()[0]


def openmp_shared() -> bool | None:
    """Whether faiss's OpenMP thread count is torch's (one OpenMP runtime: faiss imported after torch); None
    without faiss. Probed by setting faiss's count and reading torch's; both are left as they were."""
    faiss = _faiss()
    if faiss is None:
        return None
    probe = torch.get_num_threads() + 1  # (torch's lazy per-thread set-up first, so that it cannot undo the probe)
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(probe)
    try:
        return torch.get_num_threads() == probe
    finally:
        faiss.omp_set_num_threads(before)


def configure_threads(n: int | None = None, *, kmeans: int | None = None) -> dict:
    """Set torch's intra-op threads and faiss's OpenMP threads to ``thread_budget(n)`` and the threads of k-means
    fits to ``kmeans`` (else ZSSBIR_KMEANS_THREADS, else ``KMEANS_THREADS``); return ``thread_settings()``:
    what was set and where each number came from, for printing (``describe_threads``)."""
    global _CONFIGURED
    budget = thread_budget(n)
    k, k_source = _kmeans_choice(kmeans, configured=False)
    torch.set_num_threads(budget["threads"])
    faiss = _faiss()
    if faiss is not None:
        faiss.omp_set_num_threads(budget["threads"])
    _CONFIGURED = {**budget, "kmeans_threads": k, "kmeans_source": k_source}
    return thread_settings()


def ensure_threads_configured() -> dict:
    """``configure_threads()`` once per process, lazily (``ClusterIndex.fit`` calls it before faiss's first use); a
    later call, or one after an explicit ``configure_threads``, sets nothing. Returns what was configured: the
    budget (``threads``, ``source``, ``affinity``, ``cgroup_quota``) and ``kmeans_threads``, ``kmeans_source``.
    Unlike an explicit call it never raises torch's count: without ZSSBIR_THREADS it only lowers a count above the
    budget (torch counts the host's cores, not a container's quota), so a count the caller chose stays."""
    if _CONFIGURED is None:
        budget = thread_budget()
        explicit = budget["source"].startswith("env")
        configure_threads(budget["threads"] if explicit else min(torch.get_num_threads(), budget["threads"]))
        _CONFIGURED.update(threads=budget["threads"], source=budget["source"])  # the budget, not the count kept
    return dict(_CONFIGURED)


def thread_settings() -> dict:
    """The thread settings now, changing nothing: the budget (``threads``, ``source``, ``affinity``,
    ``cgroup_quota``; as configured, else as ``thread_budget`` finds it), ``configured`` (whether
    ``configure_threads`` ran), ``torch`` and ``faiss`` (their current thread counts; faiss None where it is not
    importable), ``openmp_shared`` (one OpenMP runtime for both), ``kmeans_threads`` and ``kmeans_source``, and the
    OpenMP waiting environment (``OMP_WAIT_POLICY``, ``GOMP_SPINCOUNT``; None where unset)."""
    budget = dict(_CONFIGURED) if _CONFIGURED is not None else thread_budget()
    k, k_source = _kmeans_choice()
    faiss = _faiss()
    return {"threads": budget["threads"], "source": budget["source"], "affinity": budget["affinity"],
            "cgroup_quota": budget["cgroup_quota"], "configured": _CONFIGURED is not None,
            "torch": torch.get_num_threads(), "faiss": faiss.omp_get_max_threads() if faiss is not None else None,
            "openmp_shared": openmp_shared(), "kmeans_threads": k, "kmeans_source": k_source,
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"), "GOMP_SPINCOUNT": os.environ.get("GOMP_SPINCOUNT")}


def describe_threads(settings: dict | None = None) -> str:
    """One line of ``thread_settings()`` (or of the dict ``configure_threads`` returned) for a bench or a log."""
    s = thread_settings() if settings is None else settings
    quota = "none" if s["cgroup_quota"] is None else f"{s['cgroup_quota']:g} CPUs"
    shared = {True: "one OpenMP runtime", False: "separate OpenMP runtimes", None: "-"}[s["openmp_shared"]]
    waiting = ", ".join(f"{k}={s[k]}" for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT") if s[k] is not None)
    return (f"threads: budget {s['threads']} ({s['source']}; affinity {s['affinity']} CPUs, cgroup quota {quota}); "
            f"torch {s['torch']}, faiss {s['faiss']} ({shared}); k-means fits {s['kmeans_threads']} "
            f"({s['kmeans_source']}); OpenMP waiting: {waiting or 'default (spins, then sleeps)'}")


@contextmanager
def openmp_threads(n: int | None):
    """Hold the OpenMP thread count of faiss and torch at ``n`` inside the block (None: leave them); both counts
    are restored after it. Where faiss shares torch's OpenMP runtime (``openmp_shared``) they are one setting,
    which is why k-means' own count is held around the fit instead of set once for the process."""
    if not n:
        yield
        return
    n = _positive_count(n, "threads")
    faiss = _faiss()
    torch_before = torch.get_num_threads()
    faiss_before = faiss.omp_get_max_threads() if faiss is not None else None
    if faiss is not None:
        faiss.omp_set_num_threads(n)
    torch.set_num_threads(n)
    try:
        yield
    finally:
        if faiss is not None:
            faiss.omp_set_num_threads(faiss_before)
        torch.set_num_threads(torch_before)
