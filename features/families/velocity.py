"""Velocity: the daily activity rate of the recent days over that of the days before (smoothed)."""

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
    r, b = settings.features.velocity_recent_days, settings.features.velocity_base_days
    return [feature(f"velocity_{r}_{b}", "float64", "interest",
                    f"Daily activity rate of the last {r} days over that of the {b} days before (smoothed; 1 = steady).",
                    f"Activity in the last {r} days at {{value}}x the pace of the {b} days before",
                    concept="pace", unit="ratio")]


def _params(settings: Settings, params: Any) -> tuple[Any, ...]:
    fc = settings.features
    return np.int64(fc.velocity_recent_days * DAY_US), np.int64(fc.velocity_base_days * DAY_US)


@njit(cache=True)
def kernel(row: np.ndarray, off: int, p: Any, x: Any, lead: int, t: int, lo: int, hi: int) -> None:
    recent_us, base_us = p
    # rows are in time order: each span's count is the distance between two binary searches
    since_recent = upper(x.act_t, lo, hi, t - recent_us)  # first row with t - act_t < recent_us
    n_recent = hi - since_recent
    n_base = since_recent - upper(x.act_t, lo, since_recent, t - recent_us - base_us)
    rd = recent_us / DAY_US
    bd = base_us / DAY_US
    prior = 1.0 / (rd + bd)  # one activity over the whole span: no activity at all reads as pace 1.0
    row[off] = (n_recent / rd + prior) / (n_base / bd + prior)


FAMILY = Family(
    name="velocity",
    order=60,
    doc="Activity pace of features.velocity_recent_days against the features.velocity_base_days before.",
    columns=_columns,
    inputs=frozenset({"act_t"}),
    kernel=kernel,
    params=_params,
)
