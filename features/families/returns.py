"""Previous returns: how often sales handed the lead back or disqualified it, and how long ago.

Why: a lead sales returned last week is not the same lead as one it never saw, whatever its activity
says; and one disqualified before is a lead whose next MQL sales trusts less (issue 16). Counted from
the stage changes dated ``<= t`` (``recycled`` and ``disqualified``), like every other family.

Off by default: switching it on adds columns, so the default schema (and the models trained on it)
stays as it is until a retrain chooses it (``features.families.returns.enabled: true``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numba import njit

from leadscore.features.kernel import DAY_US, upper
from leadscore.features.registry import Family
from leadscore.features.schema import FeatureSpec, feature

if TYPE_CHECKING:
    from leadscore.config import Settings


def _columns(settings: Settings, params: Any) -> list[FeatureSpec]:
    return [
        feature("times_returned", "float64", "interest",
                "How often sales handed the lead back (recycled) or disqualified it so far.",
                "Handed back by sales [once|{value} times] before", concept="returns", unit="count"),
        feature("times_disqualified", "float64", "interest", "How often the lead was disqualified so far.",
                "Disqualified [once|{value} times] before", concept="returns", unit="count", rank=1),
        feature("days_since_last_return", "float64", "interest",
                "Days since sales last handed the lead back or disqualified it (NaN: never).",
                "Last handed back by sales {value} ago", "Never handed back by sales", concept="returns", rank=2,
                unit="days"),
    ]


def _params(settings: Settings, params: Any) -> tuple[Any, ...]:
    stages = settings.stages.all
    code = {s: np.int64(stages.index(s) if s in stages else -2) for s in ("recycled", "disqualified")}
    return code["recycled"], code["disqualified"]


@njit(cache=True)
def kernel(row: np.ndarray, off: int, p: Any, x: Any, lead: int, t: int, lo: int, hi: int) -> None:
    recycled, disqualified = p
    s_lo = x.stg_ptr[lead]
    s_hi = upper(x.stg_t, s_lo, x.stg_ptr[lead + 1], t)
    returned = 0
    dq = 0
    last = -1
    for j in range(s_lo, s_hi):
        k = x.stg_k[j]
        if k == recycled or k == disqualified:  # noqa: SIM109 (plain comparisons compile in numba)
            returned += 1
            last = j
            if k == disqualified:
                dq += 1
    row[off] = returned
    row[off + 1] = dq
    row[off + 2] = (t - x.stg_t[last]) / DAY_US if last >= 0 else np.nan


FAMILY = Family(
    name="returns",
    order=75,
    doc="Times handed back or disqualified by sales, and days since the last time.",
    columns=_columns,
    inputs=frozenset({"stg_ptr", "stg_t", "stg_k"}),
    kernel=kernel,
    params=_params,
    enabled_by_default=False,
)
