"""The generated company's funnel process: the points rule that set MQLs, and what sales did day by day.

Kept apart from :mod:`leadscore.generate_block` (the latent process: who the leads are, how interested,
what they did) because this is the company's *reaction* to that process: a points rule marks MQLs,
sales accepts SQLs (passing them through MQL when the rule missed them), disqualifies some MQLs,
recycles stale ones back to marketing, and loses the leads it followed up too late
(:class:`leadscore.generate_sla.SalesFloor`). Every stage change is recorded in :class:`StageChanges`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from leadscore.config import Settings
from leadscore.generate_sla import LOST_REASON, SalesFloor
from leadscore.generate_world import SECONDS_PER_DAY

LEAD, MQL, SQL_, RECYCLED, DISQ = 1, 2, 3, 6, 7
STAGE_NAMES = ["subscriber", "lead", "mql", "sql", "opportunity", "customer", "recycled", "disqualified"]
#: activity types that turn a subscriber into a lead
CONVERSION_TYPES = ("form_submit", "content_download", "webinar_attended", "demo_request", "trial_signup")


@dataclass
class StageChanges:
    """Stage changes as they are recorded: block-local lead index, seconds, stage code, who, why."""

    lead: list[np.ndarray] = field(default_factory=list)
    sec: list[np.ndarray] = field(default_factory=list)
    stage: list[np.ndarray] = field(default_factory=list)
    by: list[np.ndarray] = field(default_factory=list)
    reason: list[np.ndarray] = field(default_factory=list)

    def record(self, idx: np.ndarray, sec: np.ndarray, code: int | np.ndarray, by: str, reason: object = None) -> None:
        self.lead.append(idx)
        self.sec.append(sec)
        self.stage.append(np.broadcast_to(np.asarray(code, dtype=np.int8), len(idx)).copy())
        self.by.append(np.full(len(idx), by, dtype=object))
        self.reason.append(reason if isinstance(reason, np.ndarray) else np.full(len(idx), reason, dtype=object))

    def seen_by_sales(self, n: int) -> np.ndarray:
        """Leads with any change after their creation row (the first record)."""
        seen = np.zeros(n, dtype=bool)
        for idx in self.lead[1:]:
            seen[idx] = True
        return seen

    def leads_reaching(self, code: int) -> int:
        return len(np.unique(np.concatenate([ld[st == code] for ld, st in zip(self.lead, self.stage, strict=True)])))

    def frame(self, start_ts: pd.Timestamp, lead_ids: np.ndarray) -> pd.DataFrame:
        lead, sec = np.concatenate(self.lead), np.concatenate(self.sec)
        order = np.lexsort((sec, lead))
        return pd.DataFrame({
            "lead_id": lead_ids[lead[order]],
            "stage": np.array(STAGE_NAMES)[np.concatenate(self.stage)[order]],
            "changed_at": pd.Series(pd.to_datetime(start_ts.value // 1000 + sec[order].astype(np.int64) * 1_000_000,
                                                   unit="us", utc=True)),
            "set_by": np.concatenate(self.by)[order],
            "reason": np.concatenate(self.reason)[order],
        }).drop_duplicates(["lead_id", "changed_at", "stage"]).reset_index(drop=True)


@dataclass
class Lifecycle:
    """One block's latent history, and the funnel state the loop leaves behind (``stage``, ``sql_*``)."""

    n: int
    n_days: int
    state: np.ndarray  # lead × day latent state, -1 before creation
    fit: np.ndarray
    subscriber: np.ndarray
    created_sec: np.ndarray
    sql_day: np.ndarray  # latent SQL day (-1: none); set to -1 for leads sales lost
    sql_sec: np.ndarray  # moved to the rep's first touch for SQLs that waited for it
    act_lead: np.ndarray
    act_day: np.ndarray
    act_sec: np.ndarray
    act_type: np.ndarray
    stage: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


def _rule_scores(life: Lifecycle, settings: Settings) -> np.ndarray:
    """The points rule's decayed score per lead × day (activities are sorted by lead and time)."""
    n, n_days = life.n, life.n_days
    type_names = settings.activity_names
    pts_by_type = np.array([settings.rules.activity_points.get(t, 0.0) for t in type_names], dtype=np.float32)
    key = life.act_lead.astype(np.int64) * n_days + life.act_day
    daily_pts = np.zeros((n, n_days), dtype=np.float32)
    if len(key):  # each (lead, day) is one contiguous run
        run_start = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        daily_pts.ravel()[key[run_start]] = np.add.reduceat(pts_by_type[life.act_type], run_start)
    decay = np.float32(0.5 ** (1.0 / (settings.rules.half_life_days or 30.0)))
    running = np.zeros(n, dtype=np.float32)
    for d in range(n_days):  # in place: the decayed score replaces the day's points
        running = running * decay + daily_pts[:, d]
        daily_pts[:, d] = running
    return daily_pts


def _mql_threshold(score: np.ndarray, alive: np.ndarray, sql_day: np.ndarray, lead_to_mql: float) -> float:
    """The rule's threshold that makes the configured share of leads MQLs (SQLs are MQLs anyway)."""
    n, n_days = score.shape
    is_sql = sql_day >= 0
    open_until = np.where(is_sql, sql_day, n_days)
    peak = np.full(n, -np.inf, dtype=np.float32)
    for first in range(0, n, 8192):
        b = slice(first, min(first + 8192, n))
        before_sql = np.arange(n_days)[None, :] < open_until[b, None]
        peak[b] = np.where(before_sql & alive[b], score[b], -np.inf).max(axis=1)
    extra_mqls = round(lead_to_mql * n) - int(is_sql.sum())
    candidates = np.sort(peak[~is_sql])[::-1]
    threshold = float(candidates[extra_mqls - 1]) if 0 < extra_mqls <= len(candidates) else np.inf
    return max(threshold, 1.0)


def run_lifecycle(
    rng: np.random.Generator, life: Lifecycle, floor: SalesFloor, settings: Settings,
    fixed: Callable[[str, Callable[[], float]], float],
) -> StageChanges:
    """Play the funnel day by day; ``fixed`` gives the company-wide constants (solved on block 0)."""
    g, n, n_days = settings.generator, life.n, life.n_days
    score = _rule_scores(life, settings)
    alive = life.state >= 0
    sql_day, sql_sec, fit = life.sql_day, life.sql_sec, life.fit
    mql_threshold = fixed("mql_threshold", lambda: _mql_threshold(score, alive, sql_day, g.lead_to_mql))
    stage = np.where(life.subscriber, 0, LEAD)
    armed = np.ones(n, dtype=bool)
    mql_since = np.full(n, -1)
    dq_at = np.full(n, -1)
    dq_norm = fixed("dq_norm", lambda: float(np.mean(np.exp(-0.8 * fit))))
    dq_prob = np.clip(g.disqualify_share_of_mqls * np.exp(-0.8 * fit) / dq_norm, 0, 0.9)
    dq_draw = rng.random(n)
    dq_delay = rng.integers(1, 6, n)
    changes = StageChanges()
    changes.record(np.arange(n), life.created_sec, np.where(life.subscriber, 0, LEAD), "rule")
    for d in range(n_days):
        s_d = score[:, d]
        open_ = alive[:, d] & ((sql_day < 0) | (d < sql_day))
        armed |= s_d < 0.8 * mql_threshold
        to_mql = open_ & np.isin(stage, (0, LEAD, RECYCLED)) & armed & (s_d >= mql_threshold)
        if to_mql.any():
            idx = np.flatnonzero(to_mql)
            at = d * SECONDS_PER_DAY + 20 * 3600 + rng.integers(0, 1800, len(idx))
            changes.record(idx, at, MQL, "rule")
            floor.hand_over(idx, d, at)
            stage[idx], mql_since[idx], armed[idx] = MQL, d, False
            dq = idx[dq_draw[idx] < dq_prob[idx]]
            dq_at[dq] = d + dq_delay[dq]
        to_dq = open_ & (stage == MQL) & (dq_at == d)
        if to_dq.any():
            idx = np.flatnonzero(to_dq)
            at = d * SECONDS_PER_DAY + 15 * 3600 + rng.integers(0, 3600, len(idx))
            changes.record(idx, at, DISQ, "sales", floor.dq_reasons(idx))
            floor.close(idx, at)
            stage[idx] = DISQ
        to_rec = open_ & (stage == MQL) & (d - mql_since >= g.recycle_after_days)
        if to_rec.any():
            idx = np.flatnonzero(to_rec)
            at = d * SECONDS_PER_DAY + 16 * 3600 + rng.integers(0, 3600, len(idx))
            changes.record(idx, at, RECYCLED, "sales", floor.return_reasons(len(idx)))
            floor.close(idx, at)
            stage[idx] = RECYCLED
        becomes_sql = sql_day == d
        if becomes_sql.any():
            idx = np.flatnonzero(becomes_sql)
            handed = idx[(stage[idx] == MQL) & (floor.open_handover[idx] >= 0)]
            kept, sql_sec[handed] = floor.convert(handed, sql_sec[handed])
            lost = handed[~kept]  # the rep came too late: the lead is handed back, and never converts
            changes.record(lost, sql_sec[lost], RECYCLED, "sales", LOST_REASON)
            stage[lost], sql_day[lost] = RECYCLED, -1
            idx = np.setdiff1d(idx, lost)
            skip = idx[stage[idx] != MQL]
            changes.record(skip, sql_sec[skip] - 60, MQL, "sales")
            changes.record(idx, sql_sec[idx], SQL_, "sales")
            stage[idx] = SQL_
    life.stage = stage
    # subscribers become leads at their first conversion activity (a form, a download, ...)
    conversion = np.isin(np.array(settings.activity_names)[life.act_type], CONVERSION_TYPES)
    first_conv = np.full(n, np.iinfo(np.int64).max)
    np.minimum.at(first_conv, life.act_lead[conversion], life.act_sec[conversion])
    first_promo = np.full(n, np.iinfo(np.int64).max)
    if len(changes.lead) > 1:
        np.minimum.at(first_promo, np.concatenate(changes.lead[1:]), np.concatenate(changes.sec[1:]))
    to_lead = np.flatnonzero(life.subscriber & (first_conv < first_promo))
    changes.record(to_lead, first_conv[to_lead] + 1, LEAD, "rule")
    return changes
