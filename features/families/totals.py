"""Lifetime totals: all activities so far, and each negative type's (``negative: true`` in the catalogue)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numba import njit

from leadscore.features.registry import Family
from leadscore.features.schema import FeatureSpec, feature, singular

if TYPE_CHECKING:
    from leadscore.config import Settings


def _columns(settings: Settings, params: Any) -> list[FeatureSpec]:
    cols = [feature("n_activities_total", "float64", "interest", "All activities up to the scoring moment.",
                    "{value} [activity|activities] in total", concept="activity", unit="count", rank=40)]
    for a in settings.activities:
        if a.negative:
            cols.append(feature(f"n_{a.name}_total", "float64", "interest",
                                f"All {a.name} activities up to the moment (negative signal).",
                                f"{{value}} [{singular(a.label)}|{a.label}] so far",
                                concept=f"activity:{a.name}", unit="count", rank=40))
    return cols


def _params(settings: Settings, params: Any) -> tuple[Any, ...]:
    # per type code: its column after n_activities_total, or -1
    slot = np.full(len(settings.activities), -1, dtype=np.int64)
    for i, k in enumerate(k for k, a in enumerate(settings.activities) if a.negative):
        slot[k] = i
    return (slot,)


@njit(cache=True)
def running_counts(out: np.ndarray, p: Any, x: Any, lo: int, hi: int) -> None:
    """``out[i, j - lo]``: rows of the i-th negative type among the lead's rows ``lo..j`` (a running count)."""
    slot = p[0]
    for j in range(hi - lo):
        for i in range(out.shape[0]):
            out[i, j] = out[i, j - 1] if j > 0 else 0.0
        s = slot[x.act_k[lo + j]]
        if s >= 0:
            out[s, j] += 1.0


@njit(cache=True)
def kernel(row: np.ndarray, off: int, p: Any, x: Any, lead: int, t: int, lo: int, hi: int) -> None:
    counts = p[1]
    row[off] = hi - lo
    if hi > lo:  # else the driver's zeros
        for i in range(counts.shape[0]):
            row[off + 1 + i] = counts[i, hi - 1 - lo]


FAMILY = Family(
    name="totals",
    order=30,
    doc="All activities so far, and the count of each negative activity type so far.",
    columns=_columns,
    inputs=frozenset({"act_k"}),
    kernel=kernel,
    params=_params,
    derive=running_counts,
    derived_rows=lambda settings, params: sum(a.negative for a in settings.activities),
)
