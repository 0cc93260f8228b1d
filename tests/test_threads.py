"""The LightGBM thread policy (training.threads): rows, affinity and the other processes' load."""

from __future__ import annotations

import os
from typing import Any

import pytest

from leadscore.training import threads
from leadscore.training.config import LightGBMConfig

BIG = 1_000_000


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A machine whose CPUs, load average and own CPU share the test sets."""
    state: dict[str, Any] = {"cpus": {0, 1}, "load": 0.0, "own": 0.0}
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: state["cpus"])
    monkeypatch.setattr(os, "getloadavg", lambda: (state["load"], state["load"], state["load"]))
    monkeypatch.setattr(threads, "_own_cpu_share", lambda: state["own"])
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


def test_a_busy_machine_gives_one_thread_but_its_own_load_does_not_count(machine: dict[str, Any]) -> None:
    cfg = LightGBMConfig()
    machine["load"] = 3.0  # other engineers' processes want the cores: barriers would wait on descheduled threads
    assert threads.lightgbm_threads(cfg, BIG) == 1
    machine["load"], machine["own"] = 1.9, 1.8  # the load is this process's own two-thread fit
    assert threads.others_load() == pytest.approx(0.1)
    assert threads.lightgbm_threads(cfg, BIG) == 2
    machine["cpus"] = set(range(8))
    machine["load"], machine["own"] = 3.0, 0.0
    assert threads.lightgbm_threads(cfg, BIG) == 2  # capped at max_threads
    assert threads.lightgbm_threads(LightGBMConfig(max_threads=8), BIG) == 5


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


def test_own_cpu_share_is_a_plausible_number() -> None:
    assert 0.0 <= threads._own_cpu_share() <= threads.available_cpus() + 1
