"""Recency: days since the last activity, the last high-intent activity and the first activity."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numba import njit

from leadscore.features.kernel import DAY_US
from leadscore.features.registry import Family
from leadscore.features.schema import FeatureSpec, feature

if TYPE_CHECKING:
    from leadscore.config import Settings


def _columns(settings: Settings, params: Any) -> list[FeatureSpec]:
    return [
        feature("days_since_last_activity", "float64", "interest", "Days since the last activity (NaN: none yet).",
                "Last activity {value} ago", "No activity yet", concept="recency", unit="days"),
        feature("days_since_last_high_intent", "float64", "interest",
                "Days since the last high-intent activity (NaN: none).", "Last buying signal {value} ago",
                "No buying signal yet", concept="buying_signals", unit="days", rank=10),
        feature("days_since_first_activity", "float64", "interest", "Days since the first activity (NaN: none yet).",
                "First activity {value} ago", "No activity yet", concept="engaged_since", unit="days"),
    ]


def _params(settings: Settings, params: Any) -> tuple[Any, ...]:
    return (np.array([a.high_intent for a in settings.activities], dtype=np.bool_),)


@njit(cache=True)
def kernel(row: np.ndarray, off: int, p: Any, x: Any, lead: int, t: int, lo: int, hi: int) -> None:
    high = p[0]
    if hi > lo:
        row[off] = (t - x.act_t[hi - 1]) / DAY_US
        row[off + 2] = (t - x.act_t[lo]) / DAY_US
    else:
        row[off] = np.nan
        row[off + 2] = np.nan
    row[off + 1] = np.nan
    for j in range(hi - 1, lo - 1, -1):
        if high[x.act_k[j]]:
            row[off + 1] = (t - x.act_t[j]) / DAY_US
            break


FAMILY = Family(
    name="recency",
    order=40,
    doc="Days since the last activity, the last high-intent activity and the first activity.",
    columns=_columns,
    inputs=frozenset({"act_t", "act_k"}),
    kernel=kernel,
    params=_params,
)
