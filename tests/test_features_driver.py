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


def test_runs_of_a_leads_moments_equal_each_moment_alone(settings) -> None:
    """The driver derives a lead's rows once per run of its moments (up to the run's latest moment, in
    a lead-local scratch): runs split by tile boundaries, shuffled moments, and each moment computed on
    its own (the online call) must give the same bits."""
    import numpy as np

    from leadscore.features import engine
    from leadscore.features.kernel import TILE
    from leadscore.features.moments import moment_arrays
    from leadscore.features.testing import generated_history

    h = generated_history(settings, n_leads=120, months=5, seed=3)
    prep = engine.prepare(h, settings)
    m_lead, m_t = moment_arrays(h, settings, prep)
    assert len(m_lead) > 2 * TILE  # runs cross tile boundaries
    grouped = engine.run(prep, m_lead, m_t, parallel=True)
    serial = engine.run(prep, m_lead, m_t, parallel=False)
    np.testing.assert_array_equal(grouped, serial)
    perm = np.random.default_rng(0).permutation(len(m_lead))
    np.testing.assert_array_equal(engine.run(prep, m_lead[perm], m_t[perm])[:, np.argsort(perm)], grouped)
    for i in range(0, len(m_lead), 37):
        alone = engine.run(prep, m_lead[i:i + 1], m_t[i:i + 1], parallel=False)
        np.testing.assert_array_equal(alone[:, 0], grouped[:, i])
