"""Windowed counts: per activity type, of all activities, and of the high-intent ones, per window.

Windows are ``features.windows_days``; which types are high intent is the catalogue's
``high_intent`` flag (``configs/activities.yaml``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numba import njit

from leadscore.features.kernel import DAY_US
from leadscore.features.registry import Family
from leadscore.features.schema import FeatureSpec, count_name, feature, num, singular, window_phrase

if TYPE_CHECKING:
    from leadscore.config import Settings


def _columns(settings: Settings, params: Any) -> list[FeatureSpec]:
    windows = settings.features.windows_days
    cols = []
    for a in settings.activities:
        for i, w in enumerate(windows):
            cols.append(feature(count_name(a.name, w), "float64", "interest",
                                f"Number of {a.name} activities in the last {w} days.",
                                f"{{value}} [{singular(a.label)}|{a.label}] in the last {window_phrase(w)}",
                                concept=f"activity:{a.name}", unit="count", rank=i))
    for i, w in enumerate(windows):
        cols.append(feature(f"n_total_{num(w)}d", "float64", "interest",
                            f"Number of activities of any type in the last {w} days.",
                            f"{{value}} [activity|activities] in the last {window_phrase(w)}",
                            concept="activity", unit="count", rank=i))
        cols.append(feature(f"n_high_intent_{num(w)}d", "float64", "interest",
                            f"Number of high-intent activities (pricing, demo, trial, meeting...) in the last {w} days.",
                            f"{{value}} buying [signal|signals] in the last {window_phrase(w)}",
                            concept="buying_signals", unit="count", rank=i))
    return cols


def _params(settings: Settings, params: Any) -> tuple[Any, ...]:
    high = np.array([a.high_intent for a in settings.activities], dtype=np.bool_)
    win_us = np.array([int(w) * DAY_US for w in settings.features.windows_days], dtype=np.int64)
    return high, win_us, np.int64(win_us.max())


@njit(cache=True)
def kernel(row: np.ndarray, off: int, p: Any, x: Any, lead: int, t: int, lo: int, hi: int) -> None:
    high, win_us, longest = p
    nw = win_us.shape[0]
    tot = off + high.shape[0] * nw  # then (total, high intent) per window
    for j in range(hi - 1, lo - 1, -1):
        dt = t - x.act_t[j]
        if dt >= longest:  # rows are in time order: every earlier one is outside every window too
            break
        k = x.act_k[j]
        for w in range(nw):
            if dt < win_us[w]:
                row[off + k * nw + w] += 1.0
                row[tot + 2 * w] += 1.0
                if high[k]:
                    row[tot + 2 * w + 1] += 1.0


FAMILY = Family(
    name="counts",
    order=10,
    doc="Activities per type, in total and of high intent, in each window of features.windows_days.",
    columns=_columns,
    inputs=frozenset({"act_t", "act_k"}),
    kernel=kernel,
    params=_params,
)
