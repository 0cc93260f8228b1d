"""How many OpenMP threads a LightGBM fit gets, and how its idle threads wait: decided here, once.

Why a policy at all: LightGBM parallelises every boosting round over many short OpenMP regions. On
small tables their synchronisation costs more than a second thread saves, so:

* one thread below ``lightgbm.parallel_min_rows`` training rows;
* otherwise as many threads as there are CPUs this process may run on (``os.sched_getaffinity``:
  ``taskset -c 0`` or a cgroup cpuset narrows it), at most ``lightgbm.max_threads``;
* ``lightgbm.num_threads`` > 0 overrides both.

Not the load average. Issue 13's collapse on a busy machine (a 3-minute fit taking over 10) was the
OpenMP *wait policy*, not the thread count: numba's parallel feature build loads GNU OpenMP before
LightGBM did, with the default policy (idle threads spin), and two spinning threads on two busy cores
burn their time slices waiting for each other. Measured on the shared 2-core machine at load 20-23
(60k rows x 130 features, 100 rounds): spinning, 2 threads 357 s wall (35 s CPU) against 66 s for 1;
sleeping (``PASSIVE``), 2 threads 12-13 s against 39-53 s for 1, and 12 s against 45 s even pinned to
one core. With sleeping threads a second thread never hurts under load (the scheduler shares a busy
core per thread, and an idle thread costs nothing), so fewer threads would only slow the fit down.

Idle OpenMP workers spin for a while before sleeping (GNU OpenMP's default), burning a core another
process or thread could use; ``OMP_WAIT_POLICY=PASSIVE`` makes them sleep at once. The runtime reads it
once, when ``libgomp`` is loaded, so :func:`configure_openmp` must run before anything loads it (the
feature build's numba kernels do, before LightGBM is imported): every ``leadscore`` command calls it
first; child processes (``make demo``'s steps, Dask workers started from this process)
inherit it from the environment.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from leadscore.training.config import LightGBMConfig

WAIT_POLICY = "PASSIVE"


def configure_openmp() -> None:
    """Make idle OpenMP threads sleep (unless the caller chose a policy); warn when it is too late.

    Called before LightGBM is imported; if an OpenMP runtime is already loaded without the policy, the
    setting cannot take effect in this process any more, which is worth a warning, not an error.
    """
    if "OMP_WAIT_POLICY" in os.environ:
        return
    os.environ["OMP_WAIT_POLICY"] = WAIT_POLICY
    if _openmp_loaded():
        warnings.warn("an OpenMP runtime was loaded before OMP_WAIT_POLICY was set: its idle threads spin; "
                      "export OMP_WAIT_POLICY=PASSIVE before starting the process", RuntimeWarning, stacklevel=2)


#: glibc ``mallopt`` parameters (``malloc.h``) and the values :func:`retain_freed_memory` sets
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 128 << 20


def retain_freed_memory() -> bool:
    """Keep freed memory in the process for the next allocation instead of returning it to the system
    (glibc ``mallopt``: blocks up to :data:`MMAP_THRESHOLD` come from the heap, and up to
    :data:`TRIM_THRESHOLD` of free heap is kept); False where the C library has no ``mallopt``.

    Why: batch scoring allocates the same few-MB arrays for every chunk (the encoded chunk, its
    contributions, the reasons' scratch). glibc serves each from fresh pages (``mmap``, or heap it trimmed
    after the last chunk), and the kernel zeroes every page on first touch: on a 3,867-row chunk ~3,100
    page faults and ~5-9 ms of system time, a tenth of the chunk's CPU and mostly on its one serial thread
    (``benchmarks/score.py``). Retaining the memory costs at most the largest chunk's working set, which
    the process held anyway. For long batch commands, not the service (whose memory should shrink back
    after a burst); set per process, as ``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_`` would."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        libc = None
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def _openmp_loaded() -> bool:
    """Whether the shared GNU OpenMP runtime LightGBM links is mapped (scikit-learn's bundled copy,
    ``libgomp-<hash>.so``, is another library with its own settings and does not count)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return False
    return "/libgomp.so" in maps


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which ``taskset`` and cgroups narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def lightgbm_threads(cfg: LightGBMConfig, rows: int) -> int:
    """Threads for a LightGBM fit on ``rows`` training rows (module docstring)."""
    if cfg.num_threads:
        return cfg.num_threads
    if rows < cfg.parallel_min_rows:
        return 1
    return max(1, min(cfg.max_threads, available_cpus()))


__all__ = ["WAIT_POLICY", "available_cpus", "configure_openmp", "lightgbm_threads", "retain_freed_memory"]
