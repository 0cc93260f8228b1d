"""The LightGBM thread policy (training.threads): rows, allowed CPUs, and the OpenMP wait policy."""

from __future__ import annotations

import os
from typing import Any

import pytest

from leadscore.training import threads
from leadscore.training.config import LightGBMConfig

BIG = 1_000_000


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A machine whose allowed CPUs the test sets."""
    state: dict[str, Any] = {"cpus": {0, 1}}
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: state["cpus"])
    return state


def test_small_tables_get_one_thread_and_a_fixed_count_wins(machine: dict[str, Any]) -> None:
    cfg = LightGBMConfig()
    assert threads.lightgbm_threads(cfg, cfg.parallel_min_rows - 1) == 1
    assert threads.lightgbm_threads(cfg, BIG) == 2
    assert threads.lightgbm_threads(LightGBMConfig(num_threads=3), 10) == 3


def test_one_allowed_cpu_gives_one_thread(machine: dict[str, Any]) -> None:
    machine["cpus"] = {0}  # taskset -c 0
    assert threads.available_cpus() == 1
    assert threads.lightgbm_threads(LightGBMConfig(), BIG) == 1


def test_more_cpus_are_capped_at_max_threads(machine: dict[str, Any]) -> None:
    machine["cpus"] = set(range(8))
    assert threads.lightgbm_threads(LightGBMConfig(), BIG) == 2
    assert threads.lightgbm_threads(LightGBMConfig(max_threads=16), BIG) == 8


def test_the_wait_policy_is_set_unless_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr(threads, "_openmp_loaded", lambda: False)
    threads.configure_openmp()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    threads.configure_openmp()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    monkeypatch.delenv("OMP_WAIT_POLICY")
    monkeypatch.setattr(threads, "_openmp_loaded", lambda: True)
    with pytest.warns(RuntimeWarning, match="OMP_WAIT_POLICY"):
        threads.configure_openmp()


_FAULTS = """
import resource, sys
import numpy as np
from leadscore.training.threads import retain_freed_memory
ok = retain_freed_memory() if sys.argv[1] == "retain" else None
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):  # a chunk's arrays: several of a few MB alive together, then freed
        arrays = [np.ones(1 << 19) for _ in range(6)]
        del arrays
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults()
print(ok, faults())
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/maps") or os.uname().sysname != "Linux", reason="glibc Linux")
def test_retained_memory_is_reused_without_page_faults() -> None:
    """After :func:`retain_freed_memory` an array freed and allocated again reuses its pages (in a child
    process: the policy is process-wide); by default glibc maps fresh ones that fault in page by page."""
    import subprocess
    import sys

    def run(mode: str) -> tuple[str, int]:
        out = subprocess.run([sys.executable, "-c", _FAULTS, mode], check=True, capture_output=True, text=True)
        ok, faults = out.stdout.split()
        return ok, int(faults)

    ok, retained = run("retain")
    if ok != "True":
        pytest.skip("no glibc mallopt")
    _, default = run("default")
    assert default >= 5 * 1024  # fresh pages: ~1024 per 4 MB array
    assert retained < 100
