"""Stage context: times recycled, the current lifecycle stage, days in it, and the lead's age.

``current_stage`` is written by the kernel as the stage's code (position in ``stages``, -1: none) and
read back as the stage name through :attr:`Family.categories`.
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
        feature("times_recycled", "float64", "interest", "How often the lead was recycled back to nurturing so far.",
                "Recycled [once|{value} times] before", concept="recycled", unit="count"),
        feature("current_stage", "str", "interest", "Lifecycle stage at the moment (last stage change; NaN: none).",
                "Currently in stage {value}", "No lifecycle stage recorded yet", concept="stage"),
        feature("days_in_stage", "float64", "interest", "Days since the last stage change (NaN: none).",
                "In the current stage for {value}", "No lifecycle stage recorded yet", concept="stage", rank=1,
                unit="days"),
        feature("days_since_created", "float64", "interest", "Days since the lead was created.",
                "Lead created {value} ago", concept="lead_age", unit="days"),
    ]


def _params(settings: Settings, params: Any) -> tuple[Any, ...]:
    stages = settings.stages.all
    return (np.int64(stages.index("recycled") if "recycled" in stages else -2),)


@njit(cache=True)
def kernel(row: np.ndarray, off: int, p: Any, x: Any, lead: int, t: int, lo: int, hi: int) -> None:
    recycled = p[0]
    s_lo = x.stg_ptr[lead]
    s_hi = upper(x.stg_t, s_lo, x.stg_ptr[lead + 1], t)
    rec = 0
    for j in range(s_lo, s_hi):
        if x.stg_k[j] == recycled:
            rec += 1
    row[off] = rec
    if s_hi > s_lo:
        row[off + 1] = x.stg_k[s_hi - 1]
        row[off + 2] = (t - x.stg_t[s_hi - 1]) / DAY_US
    else:
        row[off + 1] = -1.0
        row[off + 2] = np.nan
    row[off + 3] = (t - x.lead_created[lead]) / DAY_US


FAMILY = Family(
    name="stage",
    order=70,
    doc="Times recycled, current lifecycle stage, days in it, days since the lead was created.",
    columns=_columns,
    inputs=frozenset({"stg_ptr", "stg_t", "stg_k", "lead_created"}),
    kernel=kernel,
    params=_params,
    categories=lambda settings: {"current_stage": tuple(settings.stages.all)},
)
