"""The rule score's activity points (``rules.activity_points``, decayed and windowed as configured).

Not a model input: the family writes one kernel slot, ``rule_points``, and no schema column;
:func:`features.plan.rule_scores` adds the attribute points to it. Summed in the kernel from the same
rows as every feature, so there is no second implementation of the rule to drift.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numba import njit

from leadscore.features.kernel import DAY_US, FAR, LN2, decay_steps
from leadscore.features.registry import Family

if TYPE_CHECKING:
    from leadscore.config import Settings

SLOT = "rule_points"


def _params(settings: Settings, params: Any) -> tuple[Any, ...]:
    rc = settings.rules
    points = np.array([float(rc.activity_points.get(a.name, 0.0)) for a in settings.activities], dtype=np.float64)
    window = np.int64(int(rc.window_days) * DAY_US if rc.window_days else FAR)
    # one half-life, or none (no decay): the decay factors of features.kernel.decay_steps
    hl_inv = [LN2 / float(rc.half_life_days)] if rc.half_life_days else []
    return points, window, np.array(hl_inv, dtype=np.float64)


@njit(cache=True)
def steps(out: np.ndarray, p: Any, x: Any, lo: int, hi: int) -> None:
    decay_steps(out, p[2], x.act_t, lo, hi)


@njit(cache=True)
def kernel(row: np.ndarray, off: int, p: Any, x: Any, lead: int, t: int, lo: int, hi: int) -> None:
    points, window, hl_inv, step = p
    decays = hl_inv.shape[0] > 0
    rule = 0.0
    d = np.exp(-((t - x.act_t[hi - 1]) / DAY_US) * hl_inv[0]) if decays and hi > lo else 1.0
    for j in range(hi - 1, lo - 1, -1):
        if t - x.act_t[j] >= window:  # rows are in time order: every earlier one is outside the window too
            break
        rule += points[x.act_k[j]] * d if decays else points[x.act_k[j]]
        if decays:
            d *= step[0, j - lo]
    row[off] = rule


FAMILY = Family(
    name="rule",
    order=1000,
    doc="The points rule's activity points (the rule score without its attribute points).",
    columns=lambda settings, params: [],
    slots=lambda settings, params: [SLOT],
    inputs=frozenset({"act_t", "act_k"}),
    kernel=kernel,
    params=_params,
    derive=steps,
    derived_rows=lambda settings, params: 1 if settings.rules.half_life_days else 0,
)
