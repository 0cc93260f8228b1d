"""Windowed counts: per activity type, of all activities, and of the high-intent ones, per window.

Windows are ``features.windows_days``; which types are high intent is the catalogue's
``high_intent`` flag (``configs/activities.yaml``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numba import njit

from leadscore.features.kernel import DAY_US, upper
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
                                concept=f"activity:{a.name}", unit="count", rank=i, only_for=a.high_intent))
    for i, w in enumerate(windows):
        cols.append(feature(f"n_total_{num(w)}d", "float64", "interest",
                            f"Number of activities of any type in the last {w} days.",
                            f"{{value}} [activity|activities] in the last {window_phrase(w)}",
                            concept="activity", unit="count", rank=i))
        cols.append(feature(f"n_high_intent_{num(w)}d", "float64", "interest",
                            f"Number of high-intent activities (pricing, demo, trial, meeting...) in the last {w} days.",
                            f"{{value}} buying [signal|signals] in the last {window_phrase(w)}",
                            concept="buying_signals", unit="count", rank=i, only_for=True))
    return cols


def _params(settings: Settings, params: Any) -> tuple[Any, ...]:
    high = np.array([a.high_intent for a in settings.activities], dtype=np.bool_)
    win_us = np.array([int(w) * DAY_US for w in settings.features.windows_days], dtype=np.int64)
    return high, win_us, np.argsort(win_us, kind="stable").astype(np.int64)


@njit(cache=True)
def kernel(row: np.ndarray, off: int, p: Any, x: Any, lead: int, t: int, lo: int, hi: int) -> None:
    high, win_us, narrow = p  # narrow: the windows from the narrowest to the widest
    nw = win_us.shape[0]
    nk = high.shape[0]
    tot = off + nk * nw  # then (total, high intent) per window
    # Each row is counted once, in the narrowest window that holds it: the rows of a window are a
    # suffix of the lead's rows up to the moment (found by binary search), so the narrowest window's
    # rows, then each wider window's extra rows, are consecutive slices read without a time test.
    # A window's count is then its own rows plus every narrower window's (exact: whole numbers).
    # The total of a window is the length of its suffix, known from the same search.
    j_hi = hi
    for b in range(nw):
        w = narrow[b]
        j_lo = upper(x.act_t, lo, j_hi, t - win_us[w])
        for j in range(j_lo, j_hi):
            k = x.act_k[j]
            row[off + k * nw + w] += 1.0
            if high[k]:
                row[tot + 2 * w + 1] += 1.0
        row[tot + 2 * w] = hi - j_lo
        j_hi = j_lo
    for i in range(1, nw):
        w, v = narrow[i], narrow[i - 1]
        for k in range(nk):
            row[off + k * nw + w] += row[off + k * nw + v]
        row[tot + 2 * w + 1] += row[tot + 2 * v + 1]


FAMILY = Family(
    name="counts",
    order=10,
    doc="Activities per type, in total and of high intent, in each window of features.windows_days.",
    columns=_columns,
    inputs=frozenset({"act_t", "act_k"}),
    kernel=kernel,
    params=_params,
)
