"""Training moments: when the CRM would have called the scoring service.

Every activity of a lead that has not reached SQL yet is such a moment. Very active leads would
dominate a training set built from all of them, so per lead we keep moments at least
``moments.min_gap_hours`` apart and at most ``moments.max_per_lead``, one drawn at random from each of
``max_per_lead`` consecutive strata (spread over the lead's history rather than bunched at the end).
The draw is seeded by ``moments.seed`` and a hash of the lead id, so it does not depend on which other
leads are in the data: a partition by lead samples exactly what the full run samples.

The cap thins leads unequally: a lead that stays open long (mostly a non-converter) keeps 12 of its
many moments, and since its strata span its whole history up to the cut-off, its older months are
thinned most. Older months of the sample then over-represent converting leads (on the generated CRM
their SQL rate reached up to 4x the truth), while production scores *every* eligible moment. So each
kept moment carries its Horvitz-Thompson weight, :data:`WEIGHT_COLUMN`: the number of eligible moments
it stands for (its stratum's size when the lead is capped, else 1). Weighted sums over the sample
estimate sums over all eligible moments without bias; training uses them where they remove the bias
at the least variance (:mod:`training.refit`, :mod:`training.procedure`).
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


#: the dataset column of each moment's Horvitz-Thompson weight (module docstring); not a model input
WEIGHT_COLUMN = "moment_weight"


def moment_weights(frame: pd.DataFrame) -> np.ndarray:
    """Per row, its Horvitz-Thompson weight scaled to mean 1 within its calendar month of ``as_of``;
    1 for every row of a table without the column (a flat table: each row is one scored moment).

    Within a month the weights undo the cap's selection (a month's weighted label rate estimates the
    rate over all its eligible moments); across months they leave each month's share of the rows as
    sampled. Unscaled, older months (more thinned: mean weight ~4.4 on the generated CRMs against
    ~2.9 in the newest) would gain weight against the newest months, and a map fitted on them would
    take the older months' level: on the regime-shift CRM, the pre-shift level.
    """
    if WEIGHT_COLUMN not in frame.columns:
        return np.ones(len(frame))
    w = frame[WEIGHT_COLUMN].to_numpy(dtype=np.float64)
    if "as_of" not in frame.columns or not len(frame):
        return w / w.mean() if len(w) else w
    month = frame["as_of"].dt.tz_localize(None).dt.to_period("M").to_numpy() if frame["as_of"].dt.tz is not None \
        else frame["as_of"].dt.to_period("M").to_numpy()
    codes = pd.factorize(month)[0]
    mean = np.bincount(codes, w) / np.bincount(codes)
    return w / mean[codes]


@njit(cache=True)
def _mix(x: np.uint64) -> np.uint64:
    """splitmix64 finaliser: a well-spread 64-bit hash."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@njit(cache=True)
def _sample(act_ptr: np.ndarray, act_t: np.ndarray, first_sql: np.ndarray, lead_hash: np.ndarray,
            gap: int, cap: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices into ``act_t`` of the kept moments (grouped by lead, in time order) and their weights
    (how many eligible moments each stands for)."""
    n_leads = act_ptr.shape[0] - 1
    keep = np.empty(act_t.shape[0], dtype=np.int64)
    weight = np.ones(act_t.shape[0], dtype=np.float64)
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
                weight[n_out] = hi - lo
                n_out += 1
    return keep[:n_out], weight[:n_out]


def first_sql_times(history: CRMHistory, settings: Settings, prep: Prepared) -> np.ndarray:
    """Per lead, when it first reached SQL or beyond (stage change or opportunity); FAR if never."""
    (ptr, ev), _ = conversion_events(history, settings, prep.leads, prep)
    first = np.full(len(ptr) - 1, FAR, dtype=np.int64)
    has = ptr[1:] > ptr[:-1]
    first[has] = ev[ptr[:-1][has]]
    return first


def moment_sample(history: CRMHistory, settings: Settings, prep: Prepared
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lead codes, µs times and Horvitz-Thompson weights (:data:`WEIGHT_COLUMN`) of the sampled moments.

    The batch build hands codes and times straight to the kernel: looking a million lead ids up again
    would cost more than the sampling.
    """
    mc = settings.moments
    first = first_sql_times(history, settings, prep)
    lead_hash = pd.util.hash_array(prep.leads.values.astype(object)).astype(np.uint64)
    gap = round(mc.min_gap_hours * 3_600_000_000)
    idx, weight = _sample(prep.act_ptr, prep.act_t, first, lead_hash, gap, int(mc.max_per_lead), int(mc.seed))
    lead_of = np.repeat(np.arange(len(prep.act_ptr) - 1), np.diff(prep.act_ptr))
    return lead_of[idx], prep.act_t[idx], weight


def moment_arrays(history: CRMHistory, settings: Settings, prep: Prepared) -> tuple[np.ndarray, np.ndarray]:
    """Lead codes and µs times of the sampled moments (what :func:`training_moments` returns as a frame)."""
    m_lead, m_t, _ = moment_sample(history, settings, prep)
    return m_lead, m_t


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
