"""The generated CRM's ceiling: the exact conversion probabilities given each lead's latent state.

Kept apart from :mod:`leadscore.generate` because it is a different concept (what *could* be known,
not what happened): the latent interest state is a Markov chain and the SQL hazard depends only on
the state and the lead, so P(SQL within H days | state today) follows by dynamic programming.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from leadscore.config import Settings
from leadscore.generate_world import SECONDS_PER_DAY, TRANSITIONS

TRUTH_SCHEMA = pa.schema([("lead_id", pa.string()), ("day", pa.timestamp("us", tz="UTC")),
                          ("p_sql_30d", pa.float32()), ("p_opp_90d", pa.float32())])


def exact_truth(
    hazard: np.ndarray, q_opp: np.ndarray, opp_delay_p: float, settings: Settings
) -> tuple[np.ndarray, np.ndarray]:
    """P(SQL ≤ ``sql_days``) and P(opportunity ≤ ``opp_days``) per lead × starting state.

    ``hazard`` is the daily SQL hazard (lead × state); an SQL becomes an opportunity with probability
    ``q_opp`` (per lead) after a geometric delay with parameter ``opp_delay_p``.
    """
    n = len(hazard)
    v30 = np.zeros((n, 4))
    for _ in range(settings.horizons.sql_days):
        v30 = hazard + (1 - hazard) * (v30 @ TRANSITIONS.T)
    h_opp = settings.horizons.opp_days
    delay_cdf = 1 - (1 - opp_delay_p) ** np.arange(h_opp + 1)  # P(delay <= m days)
    reach = np.tile(np.eye(4)[None], (n, 1, 1))  # P(state at day k, no SQL yet | start state)
    p_opp_truth = np.zeros((n, 4))
    for k in range(h_opp):
        first_sql = (reach * hazard[:, None, :]).sum(axis=2)
        p_opp_truth += first_sql * delay_cdf[max(h_opp - 1 - k, 0)]
        reach = (reach * (1 - hazard[:, None, :])) @ TRANSITIONS
    p_opp_truth *= q_opp[:, None]
    return v30, p_opp_truth


def exact_truth_shifted(
    early: np.ndarray, late: np.ndarray, q_opp: np.ndarray, opp_delay_p: float, settings: Settings
) -> tuple[np.ndarray, np.ndarray]:
    """As :func:`exact_truth` when the hazard changes from ``early`` to ``late`` on a shift day.

    The answer for a day depends on how many of its horizon's days fall before the shift, so it is
    returned per ``k`` = that number of unshifted days (0: all shifted; ``H``: none), as arrays
    ``(H + 1) × lead × state``. Computed backwards: the all-shifted tails are shared by every ``k``,
    and each ``k`` then walks its ``k`` unshifted days back to the start of the horizon.
    """
    def backward(h_days: int, weight: np.ndarray) -> np.ndarray:
        tail = [np.zeros(early.shape)]  # tail[j]: value of the last j horizon days, all shifted
        for j in range(1, h_days + 1):
            tail.append(late * weight[h_days - j] + (1 - late) * (tail[-1] @ TRANSITIONS.T))
        out = np.empty((h_days + 1, *early.shape), dtype=np.float32)
        for k in range(h_days + 1):
            v = tail[h_days - k]
            for pos in range(k - 1, -1, -1):
                v = early * weight[pos] + (1 - early) * (v @ TRANSITIONS.T)
            out[k] = v
        return out

    h_sql, h_opp = settings.horizons.sql_days, settings.horizons.opp_days
    v30 = backward(h_sql, np.ones(h_sql))
    delay_cdf = 1 - (1 - opp_delay_p) ** np.arange(h_opp + 1)
    p_opp = backward(h_opp, delay_cdf[np.maximum(h_opp - 1 - np.arange(h_opp), 0)])
    return v30, p_opp * q_opp[None, :, None].astype(np.float32)


def truth_table(
    start_ts: pd.Timestamp,
    lead_ids: np.ndarray,
    state: np.ndarray,
    created_day: np.ndarray,
    truth_len: np.ndarray,
    p_sql: np.ndarray,
    p_opp: np.ndarray,
    shift_day: int,
) -> pa.Table:
    """One block's ``ground_truth`` rows: one per lead and open day (``truth_len`` days from creation).

    ``p_sql``/``p_opp`` are lead × state, or (from :func:`exact_truth_shifted`) per number of
    unshifted horizon days × lead × state, that number being ``shift_day - day`` clipped to the horizon.
    """

    def at(p: np.ndarray, lead: np.ndarray, day: np.ndarray, st: np.ndarray) -> np.ndarray:
        if p.ndim == 2:
            return p[lead, st]
        return p[np.clip(shift_day - day, 0, len(p) - 1), lead, st]

    lead = np.repeat(np.arange(len(lead_ids)), truth_len)
    day = np.arange(len(lead)) - np.repeat(np.cumsum(truth_len) - truth_len, truth_len) + np.repeat(created_day, truth_len)
    st = state[lead, day].astype(np.intp)
    return pa.table({
        "lead_id": pa.array(lead_ids[lead]),
        "day": pa.array(start_ts.value // 1000 + day.astype(np.int64) * SECONDS_PER_DAY * 1_000_000, TRUTH_SCHEMA.field("day").type),
        "p_sql_30d": pa.array(at(p_sql, lead, day, st).astype(np.float32)),
        "p_opp_90d": pa.array(at(p_opp, lead, day, st).astype(np.float32)),
    }, schema=TRUTH_SCHEMA)
