"""Training moments: when the CRM would have called the scoring service.

Every activity of a lead that has not reached SQL yet is such a moment. Very active leads would
dominate a training set built from all of them, so per lead we keep moments at least
``moments.min_gap_hours`` apart and at most ``moments.max_per_lead``, one drawn at random from each of
``max_per_lead`` consecutive strata (spread over the lead's history rather than bunched at the end).
The draw is seeded by ``moments.seed`` and a hash of the lead id, so it does not depend on which other
leads are in the data: a partition by lead samples exactly what the full run samples.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from numba import njit

from leadscore.features.engine import prepare, take_str
from leadscore.features.kernel import FAR
from leadscore.features.labels import conversion_events

if TYPE_CHECKING:
    from leadscore.config import Settings
    from leadscore.features.engine import Prepared
    from leadscore.history import CRMHistory


@njit(cache=True)
def _mix(x: np.uint64) -> np.uint64:
    """splitmix64 finaliser: a well-spread 64-bit hash."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@njit(cache=True)
def _sample(act_ptr: np.ndarray, act_t: np.ndarray, first_sql: np.ndarray, lead_hash: np.ndarray,
            gap: int, cap: int, seed: int) -> np.ndarray:
    """Indices into ``act_t`` of the kept moments (grouped by lead, in time order)."""
    n_leads = act_ptr.shape[0] - 1
    keep = np.empty(act_t.shape[0], dtype=np.int64)
    buf = np.empty(act_t.shape[0], dtype=np.int64)
    n_out = 0
    s = np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
    for lead in range(n_leads):
        n = 0
        last = np.int64(-(1 << 62))
        for j in range(act_ptr[lead], act_ptr[lead + 1]):
            t = act_t[j]
            if t >= first_sql[lead]:
                break
            if n > 0 and t == last:
                continue  # same instant: one call
            if n > 0 and t - last < gap:
                continue
            buf[n] = j
            n += 1
            last = t
        if n <= cap:
            for i in range(n):
                keep[n_out] = buf[i]
                n_out += 1
        else:
            h = lead_hash[lead] ^ s
            for k in range(cap):
                lo = (k * n) // cap
                hi = ((k + 1) * n) // cap
                r = _mix(h + np.uint64(k + 1) * np.uint64(0xD1B54A32D192ED03))
                u = (r >> np.uint64(11)) * (1.0 / 9007199254740992.0)
                keep[n_out] = buf[lo + min(int(u * (hi - lo)), hi - lo - 1)]
                n_out += 1
    return keep[:n_out]


def first_sql_times(history: CRMHistory, settings: Settings, prep: Prepared) -> np.ndarray:
    """Per lead, when it first reached SQL or beyond (stage change or opportunity); FAR if never."""
    (ptr, ev), _ = conversion_events(history, settings, prep.leads, prep)
    first = np.full(len(ptr) - 1, FAR, dtype=np.int64)
    has = ptr[1:] > ptr[:-1]
    first[has] = ev[ptr[:-1][has]]
    return first


def moment_arrays(history: CRMHistory, settings: Settings, prep: Prepared) -> tuple[np.ndarray, np.ndarray]:
    """Lead codes and µs times of the sampled moments (what :func:`training_moments` returns as a frame).

    The batch build hands these straight to the kernel: looking a million lead ids up again would
    cost more than the sampling.
    """
    mc = settings.moments
    first = first_sql_times(history, settings, prep)
    lead_hash = pd.util.hash_array(prep.leads.values.astype(object)).astype(np.uint64)
    gap = round(mc.min_gap_hours * 3_600_000_000)
    idx = _sample(prep.act_ptr, prep.act_t, first, lead_hash, gap, int(mc.max_per_lead), int(mc.seed))
    lead_of = np.repeat(np.arange(len(prep.act_ptr) - 1), np.diff(prep.act_ptr))
    return lead_of[idx], prep.act_t[idx]


def moments_frame(prep: Prepared, m_lead: np.ndarray, m_t: np.ndarray) -> pd.DataFrame:
    """``lead_id, as_of`` of moments given as lead codes of ``prep`` and µs times."""
    return pd.DataFrame({
        "lead_id": take_str(prep.leads.values, m_lead),
        "as_of": pd.Series(pd.to_datetime(m_t, unit="us", utc=True)).astype("datetime64[us, UTC]"),
    })


def training_moments(history: CRMHistory, settings: Settings, prep: Prepared | None = None) -> pd.DataFrame:
    """``lead_id, as_of`` of the sampled moments, ordered by lead (history order) then time."""
    prep = prep if prep is not None else prepare(history, settings)
    return moments_frame(prep, *moment_arrays(history, settings, prep))
