"""The generated kernel driver is named by its content only, so numba's on-disk cache is reused."""

from __future__ import annotations

import os
import subprocess
import sys

_NAME = ("from leadscore.config import load_settings; from leadscore.features.engine import static; "
         "print(static(load_settings()).kernel.__name__)")


def test_driver_name_is_the_same_in_every_process() -> None:
    """Two fresh interpreters (different object ids, different set orders) must pick the same driver
    file: a name that changes per process means a full numba compile in every worker and every run."""
    env = {**os.environ, "PYTHONHASHSEED": "random"}
    names = {subprocess.run([sys.executable, "-c", _NAME], check=True, capture_output=True, text=True,
                            env=env).stdout.strip() for _ in range(3)}
    assert len(names) == 1, names
    assert next(iter(names)).startswith("leadscore_kernel_")
