"""Active days: distinct UTC days with any activity, per window longer than one day."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numba import njit

from leadscore.features.kernel import DAY_US
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
    win_us = np.array([w * DAY_US for w in _windows(settings)], dtype=np.int64)
    return win_us, np.int64(win_us.max() if len(win_us) else 0)


@njit(cache=True)
def kernel(row: np.ndarray, off: int, p: Any, x: Any, lead: int, t: int, lo: int, hi: int) -> None:
    win_us, longest = p
    last_day = -(1 << 62)
    for j in range(hi - 1, lo - 1, -1):
        dt = t - x.act_t[j]
        if dt >= longest:  # rows are in time order: every earlier one is outside every window too
            break
        day = x.act_day[j]
        if day != last_day:
            last_day = day
            for w in range(win_us.shape[0]):
                if dt < win_us[w]:
                    row[off + w] += 1.0


FAMILY = Family(
    name="active_days",
    order=50,
    doc="Distinct UTC days with activity in each window of features.windows_days longer than a day.",
    columns=_columns,
    inputs=frozenset({"act_t", "act_day"}),
    kernel=kernel,
    params=_params,
)
