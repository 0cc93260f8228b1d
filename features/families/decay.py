"""Decayed counts: each activity weighs ``2^(-age / half-life)``, per type and in total.

Half-lives are ``features.half_lives_days``. The weights are for the model; a reason words them as
"only more than N days ago" (N the longest window), since a type with recent activity is worded by
its windowed counts first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numba import njit

from leadscore.features.kernel import DAY_US, LN2
from leadscore.features.registry import Family
from leadscore.features.schema import FeatureSpec, decay_name, feature, num

if TYPE_CHECKING:
    from leadscore.config import Settings


def _columns(settings: Settings, params: Any) -> list[FeatureSpec]:
    fc = settings.features
    longest = num(max(fc.windows_days))
    cols = []
    for a in settings.activities:
        for i, hl in enumerate(fc.half_lives_days):
            cols.append(feature(decay_name(a.name, hl), "float64", "interest",
                                f"Exponentially decayed count of {a.name} activities, half-life {hl} days.",
                                f"{a.label.capitalize()} only more than {longest} days ago (weight {{value}})",
                                concept=f"activity:{a.name}", unit="weight", rank=50 + i))
    for i, hl in enumerate(fc.half_lives_days):
        cols.append(feature(f"decay_total_hl{num(hl)}", "float64", "interest",
                            f"Exponentially decayed count of all activities, half-life {hl} days.",
                            f"Activity only more than {longest} days ago (weight {{value}})",
                            concept="activity", unit="weight", rank=50 + i))
    return cols


def _params(settings: Settings, params: Any) -> tuple[Any, ...]:
    hl_inv = np.array([LN2 / float(h) for h in settings.features.half_lives_days], dtype=np.float64)
    return hl_inv, len(settings.activities)


@njit(cache=True)
def kernel(row: np.ndarray, off: int, p: Any, x: Any, lead: int, t: int, lo: int, hi: int) -> None:
    hl_inv, n_types = p
    nh = hl_inv.shape[0]
    tot = off + n_types * nh
    for j in range(hi - 1, lo - 1, -1):
        dtd = (t - x.act_t[j]) / DAY_US
        k = x.act_k[j]
        for h in range(nh):
            d = np.exp(-dtd * hl_inv[h])
            row[off + k * nh + h] += d
            row[tot + h] += d


FAMILY = Family(
    name="decay",
    order=20,
    doc="Exponentially decayed activity counts per type and in total, for each of features.half_lives_days.",
    columns=_columns,
    inputs=frozenset({"act_t", "act_k"}),
    kernel=kernel,
    params=_params,
)
