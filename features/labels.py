"""Closed-loop labels with censoring: did the lead reach SQL (or an opportunity) soon after a moment?

``y_sql`` is 1.0 when the lead reaches ``sql`` or a later funnel stage within ``horizons.sql_days``
after ``as_of`` (an opportunity created for the lead counts too: a CRM may skip the stage, but an
opportunity means sales accepted the lead); ``y_opp`` is 1.0 when an opportunity is created for the
lead within ``horizons.opp_days``. The window is ``(as_of, as_of + H]``. A moment whose window runs
past the data cut-off is **censored** (NaN) unless the event already happened before the cut-off: we
cannot know it did not convert, and counting it as 0 would bias recent moments towards "no".

**Rejections with a reason** (issue 16, ``configs/reasons.yaml``) are label events too. When sales
disqualifies a lead with a reason whose ``label_rule`` is ``negative`` (wrong persona, no budget,
bought a competitor, spam...), it has answered the question the label asks: a moment before that
rejection which would be censored (its horizon runs past the cut-off, no conversion yet) is labelled
0.0 for both targets instead, because the lead will not convert. A conversion inside the window still
wins (1.0). Reasons whose rule is ``censor`` ("returned - not ready", no response, bad timing) and
unknown codes change nothing: "not now" is no answer, and the ordinary horizon rule applies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from numba import njit

from leadscore.features.engine import (
    NAT,
    FeatureInputError,
    Keys,
    column,
    moment_codes,
    objects,
    prepare,
    ts_us,
)
from leadscore.features.kernel import DAY_US

if TYPE_CHECKING:
    from leadscore.config import Settings
    from leadscore.features.engine import Prepared
    from leadscore.history import CRMHistory


@njit(cache=True)
def _label(ptr: np.ndarray, ev: np.ndarray, m_lead: np.ndarray, m_t: np.ndarray, horizon: int,
           cutoff: int) -> np.ndarray:
    """1.0 if an event of the lead falls in (t, min(t + horizon, cutoff)], else 0.0, NaN if censored."""
    out = np.empty(m_lead.shape[0], dtype=np.float64)
    for m in range(m_lead.shape[0]):
        lead, t = m_lead[m], m_t[m]
        end = min(t + horizon, cutoff)
        hit = False
        for j in range(ptr[lead], ptr[lead + 1]):
            if ev[j] > end:
                break
            if ev[j] > t:
                hit = True
                break
        if hit:
            out[m] = 1.0
        elif t + horizon > cutoff:
            out[m] = np.nan
        else:
            out[m] = 0.0
    return out


@njit(cache=True)
def _answered(ptr: np.ndarray, ev: np.ndarray, m_lead: np.ndarray, m_t: np.ndarray, cutoff: int,
              y: np.ndarray) -> np.ndarray:
    """``y`` with censored moments set to 0.0 when a negative rejection of the lead falls in (t, cutoff]."""
    out = y.copy()
    for m in range(m_lead.shape[0]):
        if not np.isnan(out[m]):
            continue
        lead, t = m_lead[m], m_t[m]
        for j in range(ptr[lead], ptr[lead + 1]):
            if ev[j] > cutoff:
                break
            if ev[j] > t:
                out[m] = 0.0
                break
    return out


def negative_rejections(history: CRMHistory, settings: Settings, keys: Keys) -> tuple[np.ndarray, np.ndarray]:
    """Per-lead sorted times (CSR) of rejections whose reason teaches "will not convert" (module doc)."""
    stg = history.stage_changes
    negatives = settings.reasons.negatives()
    if "reason" not in stg.columns or not negatives or not len(stg):
        return np.zeros(len(keys) + 1, dtype=np.int64), np.zeros(0, dtype=np.int64)
    rows = stg[stg["reason"].isin(list(negatives)).to_numpy(dtype=bool, na_value=False)]
    return _csr_events(keys.codes(column(rows, "lead_id")), ts_us(column(rows, "changed_at"),
                                                                  "stage_changes.changed_at"), len(keys))


def _csr_events(lead_codes: np.ndarray, times: np.ndarray, n_leads: int) -> tuple[np.ndarray, np.ndarray]:
    ok = (lead_codes >= 0) & (times != NAT)
    lc, tt = lead_codes[ok], times[ok]
    order = np.lexsort((tt, lc))
    ptr = np.zeros(n_leads + 1, dtype=np.int64)
    if len(lc):
        np.cumsum(np.bincount(lc[order], minlength=n_leads), out=ptr[1:])
    return ptr, np.ascontiguousarray(tt[order])


def conversion_events(history: CRMHistory, settings: Settings, keys: Keys,
                      prep: Prepared | None = None) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Per-lead sorted event times (CSR): reaching SQL-or-beyond (incl. opportunities) and opportunities."""
    n = len(keys)
    sql_rank = settings.stages.rank("sql")
    sql_codes = np.array([settings.stages.rank(s) >= sql_rank for s in settings.stages.all], dtype=bool)
    stg = history.stage_changes
    s_lead = keys.codes(column(stg, "lead_id"))
    stage_vals = objects(column(stg, "stage"))
    lookup = {s: i for i, s in enumerate(settings.stages.all)}
    s_code = np.fromiter((lookup.get(v, -1) if isinstance(v, str) else -1 for v in stage_vals), np.int64, len(stage_vals)) \
        if len(stage_vals) < 4096 else pd.Index(settings.stages.all).get_indexer(column(stg, "stage"))
    s_t = ts_us(column(stg, "changed_at"), "stage_changes.changed_at")
    is_sql = (s_code >= 0) & sql_codes[np.maximum(s_code, 0)]
    opps = history.opportunities
    if len(opps):
        o_lead = keys.codes(column(opps, "lead_id"))
        o_t = ts_us(column(opps, "created_at"), "opportunities.created_at")
    else:
        o_lead = np.zeros(0, dtype=np.int64)
        o_t = np.zeros(0, dtype=np.int64)
    sql = _csr_events(np.concatenate([s_lead[is_sql], o_lead]), np.concatenate([s_t[is_sql], o_t]), n)
    opp = _csr_events(o_lead, o_t, n)
    return sql, opp


def make_labels(history: CRMHistory, moments: pd.DataFrame, settings: Settings,
                prep: Prepared | None = None,
                codes: tuple[np.ndarray, np.ndarray] | None = None) -> pd.DataFrame:
    """``y_sql`` and ``y_opp`` (float64: 1.0, 0.0, NaN = censored) for each moment, same order/RangeIndex.

    ``codes``: the moments' lead codes of ``prep`` and µs times, when the caller has them (the batch
    build), instead of looking the lead ids up again.
    """
    prep = prep if prep is not None else prepare(history, settings)
    m_lead, m_t = codes if codes is not None else moment_codes(prep, moments)
    cutoff = pd.Timestamp(history.cutoff)
    if cutoff is pd.NaT:
        raise FeatureInputError("history.cutoff: missing (labels need to know where the data ends)")
    cut = int(ts_us(pd.Series([cutoff]), "history.cutoff")[0])
    (sp, se), (op, oe) = conversion_events(history, settings, prep.leads, prep)
    h = settings.horizons
    y_sql = _label(sp, se, m_lead, m_t, int(h.sql_days) * DAY_US, cut)
    y_opp = _label(op, oe, m_lead, m_t, int(h.opp_days) * DAY_US, cut)
    rp, re_ = negative_rejections(history, settings, prep.leads)
    if len(re_):
        y_sql, y_opp = _answered(rp, re_, m_lead, m_t, cut, y_sql), _answered(rp, re_, m_lead, m_t, cut, y_opp)
    return pd.DataFrame({"y_sql": y_sql, "y_opp": y_opp})
