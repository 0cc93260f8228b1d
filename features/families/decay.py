"""Decayed counts: each activity weighs ``2^(-age / half-life)``, per type and in total.

Half-lives are ``features.half_lives_days``. The weights are for the model; a reason words them as
"only more than N days ago" (N the longest window), since a type with recent activity is worded by
its windowed counts first.

Why a running product: a moment sees every activity of its lead, and a lead has about ten moments,
so an ``exp`` per activity, half-life and moment was most of the kernel's time. The weight of an
activity is the next later one's weight times ``2^(-gap / half-life)``, a factor that does not depend
on the moment: :func:`steps` computes it once per activity (:func:`features.kernel.decay_steps`) and
the kernel needs one ``exp`` per moment and half-life, for the latest activity, and a multiplication
per activity.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numba import njit

from leadscore.features.kernel import DAY_US, LN2, decay_steps
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
def steps(out: np.ndarray, p: Any, x: Any, lo: int, hi: int) -> None:
    decay_steps(out, p[0], x.act_t, lo, hi)


@njit(cache=True)
def kernel(row: np.ndarray, off: int, p: Any, x: Any, lead: int, t: int, lo: int, hi: int) -> None:
    hl_inv, n_types, step = p
    nh = hl_inv.shape[0]
    tot = off + n_types * nh
    if hi <= lo:
        return
    age = (t - x.act_t[hi - 1]) / DAY_US
    for h in range(nh):
        d = np.exp(-age * hl_inv[h])  # the latest activity's weight; each earlier one's from the steps
        total = 0.0
        for j in range(hi - 1, lo - 1, -1):
            row[off + x.act_k[j] * nh + h] += d
            total += d
            d *= step[h, j - lo]
        row[tot + h] = total


FAMILY = Family(
    name="decay",
    order=20,
    doc="Exponentially decayed activity counts per type and in total, for each of features.half_lives_days.",
    columns=_columns,
    inputs=frozenset({"act_t", "act_k"}),
    kernel=kernel,
    params=_params,
    derive=steps,
    derived_rows=lambda settings, params: len(settings.features.half_lives_days),
)
