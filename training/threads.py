"""How many OpenMP threads a LightGBM fit gets, and how its idle threads wait: decided here, once.

Why a policy at all: LightGBM parallelises every boosting round over many short OpenMP regions, each
ending in a barrier that waits for *all* its threads. On two cores that other processes also want, the
second thread is often descheduled, and every barrier then waits for the OS to give it a core back: a
fit that takes 3 minutes on a quiet machine took over 10 with two threads on a busy one (issue 13),
while one thread degrades only in proportion to the load. On small tables the synchronisation costs
more than the second thread saves even on a quiet machine. So:

* one thread below ``lightgbm.parallel_min_rows`` training rows;
* otherwise as many threads as there are CPUs this process may run on (``os.sched_getaffinity``:
  ``taskset -c 0`` gives one) that the *other* processes leave idle, capped at ``lightgbm.max_threads``.
  The others' demand is the 1-minute load average less this process's own average CPU use (its
  CPU time over its lifetime), so a fit's own threads do not talk the next fit out of them;
* ``lightgbm.num_threads`` > 0 overrides all of it. LightGBM's ``deterministic`` promises the same
  model for the same data, seed *and thread count*; on tables above ``parallel_min_rows`` the automatic
  count follows the load, so a run that must repeat bit for bit fixes ``num_threads``.

Idle OpenMP workers spin for a while before sleeping (GNU OpenMP's default), burning a core another
process or thread could use; ``OMP_WAIT_POLICY=PASSIVE`` makes them sleep at once. The runtime reads it
once, when ``libgomp`` is loaded, so :func:`configure_openmp` must run before the first LightGBM (or
scikit-learn) import; child processes (``make demo``'s steps, Dask workers started from this process)
inherit it from the environment.
"""

from __future__ import annotations

import math
import os
import time
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


def _own_cpu_share() -> float:
    """This process's average CPU use since it started (in CPUs), the part of the load average it made."""
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        start = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19]) / ticks
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 1.0
    lived = uptime - start
    return time.process_time() / lived if lived > 1.0 else 1.0


def others_load() -> float:
    """Runnable demand of the other processes: the 1-minute load average less this process's share."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        return 0.0
    return max(0.0, load - _own_cpu_share())


def lightgbm_threads(cfg: LightGBMConfig, rows: int) -> int:
    """Threads for a LightGBM fit on ``rows`` training rows (module docstring)."""
    if cfg.num_threads:
        return cfg.num_threads
    if rows < cfg.parallel_min_rows:
        return 1
    cpus = available_cpus()
    if cpus < 2:
        return 1
    idle = math.floor(cpus - others_load() + 0.5)
    return max(1, min(cfg.max_threads, cpus, idle))


__all__ = ["WAIT_POLICY", "available_cpus", "configure_openmp", "lightgbm_threads", "others_load"]
