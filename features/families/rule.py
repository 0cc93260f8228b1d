"""The rule score's activity points (``rules.activity_points``, decayed and windowed as configured).

Not a model input: the family writes one kernel slot, ``rule_points``, and no schema column;
:func:`features.plan.rule_scores` adds the attribute points to it. Summed in the kernel from the same
rows as every feature, so there is no second implementation of the rule to drift.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numba import njit

from leadscore.features.kernel import DAY_US, FAR, LN2
from leadscore.features.registry import Family

if TYPE_CHECKING:
    from leadscore.config import Settings

SLOT = "rule_points"


def _params(settings: Settings, params: Any) -> tuple[Any, ...]:
    rc = settings.rules
    points = np.array([float(rc.activity_points.get(a.name, 0.0)) for a in settings.activities], dtype=np.float64)
    window = np.int64(int(rc.window_days) * DAY_US if rc.window_days else FAR)
    hl_inv = LN2 / float(rc.half_life_days) if rc.half_life_days else 0.0
    return points, window, np.float64(hl_inv)


@njit(cache=True)
def kernel(row: np.ndarray, off: int, p: Any, x: Any, lead: int, t: int, lo: int, hi: int) -> None:
    points, window, hl_inv = p
    rule = 0.0
    for j in range(hi - 1, lo - 1, -1):
        dt = t - x.act_t[j]
        if dt < window:
            if hl_inv > 0.0:
                rule += points[x.act_k[j]] * np.exp(-(dt / DAY_US) * hl_inv)
            else:
                rule += points[x.act_k[j]]
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
)
