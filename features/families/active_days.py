"""Active days: distinct UTC days with any activity, per window longer than one day.

Counted without walking the rows: the rows in a window are a suffix of the lead's rows up to the
moment (one binary search), and the distinct days of a suffix are the difference of a per-row running
count of distinct days (:func:`day_index`, derived once per row).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numba import njit

from leadscore.features.kernel import DAY_US, upper
from leadscore.features.registry import Family
from leadscore.features.schema import FeatureSpec, feature, num

if TYPE_CHECKING:
    from leadscore.config import Settings


def _windows(settings: Settings) -> list[int]:
    return [w for w in settings.features.windows_days if w > 1]


def _columns(settings: Settings, params: Any) -> list[FeatureSpec]:
    return [feature(f"active_days_{num(w)}d", "float64", "interest", f"Distinct UTC days with activity in the last {w} days.",
                    f"Active on {{value}} [day|days] of the last {num(w)}", concept="active_days", unit="count", rank=i)
            for i, w in enumerate(_windows(settings))]


def _params(settings: Settings, params: Any) -> tuple[Any, ...]:
    return (np.array([w * DAY_US for w in _windows(settings)], dtype=np.int64),)


@njit(cache=True)
def day_index(out: np.ndarray, p: Any, x: Any, lo: int, hi: int) -> None:
    """``out[0, j - lo]``: how many distinct days the lead's rows ``lo..j`` fall on (rows are in time order)."""
    n = 0.0
    for j in range(lo, hi):
        if j == lo or x.act_day[j] != x.act_day[j - 1]:
            n += 1.0
        out[0, j - lo] = n


@njit(cache=True)
def kernel(row: np.ndarray, off: int, p: Any, x: Any, lead: int, t: int, lo: int, hi: int) -> None:
    win_us, days = p
    if hi <= lo:
        return
    for w in range(win_us.shape[0]):
        # the rows in the window are a suffix j..hi-1; a day counts when any of its rows is in it
        j = upper(x.act_t, lo, hi, t - win_us[w])
        if j < hi:
            row[off + w] = days[0, hi - 1 - lo] - days[0, j - lo] + 1.0


FAMILY = Family(
    name="active_days",
    order=50,
    doc="Distinct UTC days with activity in each window of features.windows_days longer than a day.",
    columns=_columns,
    inputs=frozenset({"act_t", "act_day"}),
    kernel=kernel,
    params=_params,
    derive=day_index,
    derived_rows=lambda settings, params: 1,
)
