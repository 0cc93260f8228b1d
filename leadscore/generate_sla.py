"""The generated company's sales floor: reps who follow MQLs up, slowly or fast, and what it costs.

Why: the SLA review asks how fast sales followed up each MQL, how many attempts it made, why it handed
leads back, and whether speed matters. The generator plays that on top of the latent process
(:mod:`leadscore.generate`), with a **known** effect of follow-up delay on conversion, so the review
(:mod:`leadscore.training.sla_ops`) can be checked against the truth:

* every lead has a rep (its ``owner`` once sales has seen it); reps differ in speed (a median delay
  from hand-over to first touch) and in weekly capacity: a rep handed more MQLs than it can take in
  a week gets slower in proportion (a backlog);
* each hand-over (an MQL set by the rule) gets a first touch after the rep's delay, then attempts
  (calls and emails about a day apart) until the hand-over ends;
* **the effect**: a lead that would become SQL during a hand-over does so only with probability
  :func:`follow_up_multiplier` of the delay (1 at once, ~0.73 after a day, ~0.52 after three);
  otherwise the rep lost it and hands it back (``returned_no_response``). The SQL waits for the first
  touch (nobody qualifies a lead they have not spoken to);
* disqualifications carry a reason (low-fit leads more often ``wrong_persona``), MQLs recycled after
  ``recycle_after_days`` are ``returned_not_ready`` or ``returned_bad_timing``.

Each block of leads (:mod:`leadscore.generate_block`) has its own team of these reps, its capacity sized
to the block, so a large CRM is many teams as loaded as a small one's. All draws come from their own
random stream, so the lead-side history (accounts, leads, the lead's own
activities, the latent states and the ground truth) is exactly what the generator drew before the
sales floor existed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from leadscore.generate_world import PROPERTIES, SECONDS_PER_DAY

#: the stream id mixed into the seed for sales-floor draws
SLA_STREAM = 4241
#: (rep, median hours to first touch, share of the team's weekly capacity)
REPS = (("rep_ana", 1.5, 0.22), ("rep_ben", 4.0, 0.20), ("rep_cai", 10.0, 0.18), ("rep_dee", 20.0, 0.14),
        ("rep_eli", 40.0, 0.12), ("rep_fay", 6.0, 0.14))
#: the sales teams: rep_ana, rep_ben, rep_cai (fast) in the first, rep_dee, rep_eli, rep_fay (slower) in the second
TEAMS = ("team_north", "team_south")


def rep_team(rep: str) -> str:
    """The team of a generated rep (deterministic: its position in :data:`REPS`)."""
    return TEAMS[[r[0] for r in REPS].index(rep) * len(TEAMS) // len(REPS)]


#: the floor the effect of delay tends to, and its time scale in hours
EFFECT_FLOOR, EFFECT_HOURS = 0.45, 36.0
#: negative reasons for a disqualification, with a weight for low-fit and for other leads
DQ_REASONS = (("disqualified:wrong_persona", 3.0, 1.0), ("disqualified:student_or_job_seeker", 2.0, 0.3),
              ("disqualified:no_budget", 1.0, 2.0), ("disqualified:competitor", 0.5, 1.5),
              ("disqualified:spam", 0.5, 0.3), ("disqualified:other", 0.5, 0.6))
RETURN_REASONS = (("returned_not_ready", 0.7), ("returned_bad_timing", 0.3))
LOST_REASON = "returned_no_response"


def follow_up_multiplier(hours: np.ndarray) -> np.ndarray:
    """The ground truth: P(a would-be SQL converts | first touch after ``hours``)."""
    return EFFECT_FLOOR + (1 - EFFECT_FLOOR) * np.exp(-np.asarray(hours, dtype=float) / EFFECT_HOURS)


@dataclass
class SalesFloor:
    """The reps and every hand-over they got, filled in day by day by the lifecycle loop."""

    rng: np.random.Generator
    rep: np.ndarray  # per lead: rep index
    capacity: np.ndarray  # per rep: hand-overs a week before a backlog builds
    load: np.ndarray  # rep × day: hand-overs received
    fit: np.ndarray
    open_handover: np.ndarray  # per lead: index of its open hand-over, -1 when none
    h_lead: list[int] = field(default_factory=list)
    h_mql_sec: list[int] = field(default_factory=list)
    h_touch_sec: list[int] = field(default_factory=list)
    h_lost_draw: list[float] = field(default_factory=list)
    h_end_sec: list[int] = field(default_factory=list)  # -1 while open
    h_sql_sec: list[int] = field(default_factory=list)  # the SQL it turned into (-1: none)
    h_would: list[bool] = field(default_factory=list)  # the latent process made it an SQL
    h_attempts: list[int] = field(default_factory=list)

    @classmethod
    def draw(cls, rng: np.random.Generator, n: int, n_days: int, fit: np.ndarray, mql_share: float) -> SalesFloor:
        """The team of one block of leads (``rng``: the block's sales-floor stream); its capacity is sized
        to the block, so every block's team is as loaded as the whole company's was."""
        shares = np.array([r[2] for r in REPS])
        weekly = max(mql_share * n / max(n_days / 7, 1.0), 1.0)
        return cls(rng=rng, rep=rng.choice(len(REPS), size=n, p=shares / shares.sum()),
                   capacity=1.3 * weekly * shares, load=np.zeros((len(REPS), n_days + 1)), fit=fit,
                   open_handover=np.full(n, -1, dtype=np.int64))

    def hand_over(self, idx: np.ndarray, day: int, mql_sec: np.ndarray) -> None:
        """MQLs handed to their reps on ``day``: draw each first touch (speed × backlog)."""
        reps = self.rep[idx]
        np.add.at(self.load[:, day], reps, 1)
        week = self.load[:, max(0, day - 6):day + 1].sum(axis=1)
        backlog = 1 + np.maximum(week / self.capacity - 1, 0)
        median = np.array([r[1] for r in REPS])[reps] * backlog[reps]
        hours = median * np.exp(self.rng.normal(0, 0.6, len(idx)))
        attempts = 1 + np.minimum(self.rng.geometric(0.45, len(idx)) - 1, 5)
        lost = self.rng.random(len(idx))
        first = len(self.h_lead)
        self.h_lead += idx.tolist()
        self.h_mql_sec += mql_sec.tolist()
        self.h_touch_sec += (mql_sec + np.round(hours * 3600)).astype(np.int64).tolist()
        self.h_lost_draw += lost.tolist()
        self.h_attempts += attempts.tolist()
        self.h_end_sec += [-1] * len(idx)
        self.h_sql_sec += [-1] * len(idx)
        self.h_would += [False] * len(idx)
        self.open_handover[idx] = np.arange(first, first + len(idx))

    def close(self, idx: np.ndarray, sec: np.ndarray) -> None:
        """The hand-overs of ``idx`` ended at ``sec`` (disqualified, recycled)."""
        for lead, s in zip(idx.tolist(), sec.tolist(), strict=True):
            h = self.open_handover[lead]
            if h >= 0:
                self.h_end_sec[h] = int(s)
                self.open_handover[lead] = -1

    def convert(self, idx: np.ndarray, sql_sec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Would-be SQLs of ``idx`` (leads in an open hand-over): which convert, and their SQL times.

        Returns (kept mask, seconds): a kept SQL waits for the first touch; a lost lead is handed back
        when the rep finally gets to it (it is gone by then).
        """
        h = self.open_handover[idx]
        touch = np.array([self.h_touch_sec[i] for i in h], dtype=np.int64)
        hours = (touch - np.array([self.h_mql_sec[i] for i in h])) / 3600
        kept = np.array([self.h_lost_draw[i] for i in h]) < follow_up_multiplier(hours)
        when = np.maximum(sql_sec, touch + 3600)
        for j, i in enumerate(h.tolist()):
            self.h_would[i] = True
            self.h_end_sec[i] = int(when[j])
            self.h_sql_sec[i] = int(when[j]) if kept[j] else -1
        self.open_handover[idx] = -1
        return kept, when

    def dq_reasons(self, idx: np.ndarray) -> np.ndarray:
        low = self.fit[idx] < -0.5
        codes = np.array([r[0] for r in DQ_REASONS], dtype=object)
        out = np.empty(len(idx), dtype=object)
        for mask, col in ((low, 1), (~low, 2)):
            w = np.array([r[col] for r in DQ_REASONS])
            out[mask] = codes[self.rng.choice(len(codes), size=int(mask.sum()), p=w / w.sum())]
        return out

    def return_reasons(self, k: int) -> np.ndarray:
        codes = np.array([r[0] for r in RETURN_REASONS], dtype=object)
        w = np.array([r[1] for r in RETURN_REASONS])
        return codes[self.rng.choice(len(codes), size=k, p=w)]

    def owners(self, seen: np.ndarray) -> np.ndarray:
        """``owner`` per lead: its rep once sales has seen it (a hand-over or an SQL), else empty."""
        names = np.array([r[0] for r in REPS], dtype=object)[self.rep]
        names[~seen] = None
        return names

    def touches(self, horizon_sec: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The reps' touches (lead, seconds, type): attempts a day apart from the first touch while
        the hand-over is open (and before ``horizon_sec``), then a meeting for the SQLs."""
        lead, sec, kind = [], [], []
        gaps = self.rng.integers(18 * 3600, 30 * 3600, size=(max(len(self.h_lead), 1), 6))
        for i, ld in enumerate(self.h_lead):
            end = self.h_end_sec[i] if self.h_end_sec[i] >= 0 else horizon_sec
            t = self.h_touch_sec[i]
            for a in range(self.h_attempts[i]):
                if t >= min(end, horizon_sec):
                    break
                lead.append(ld)
                sec.append(t)
                kind.append("sales_call" if a % 2 == 0 else "sales_email")
                t += int(gaps[i, a])
            if self.h_sql_sec[i] >= 0:
                lead.append(ld)
                sec.append(self.h_sql_sec[i] - 1800)
                kind.append("meeting_held")
        return np.array(lead, dtype=np.int64), np.array(sec, dtype=np.int64), np.array(kind, dtype=object)

    def handovers(self) -> dict[str, np.ndarray]:
        """Every hand-over as arrays (what :func:`sla_truth` needs), so blocks can be pooled."""
        return {"mql_sec": np.array(self.h_mql_sec, dtype=np.int64), "touch_sec": np.array(self.h_touch_sec, dtype=np.int64),
                "sql_sec": np.array(self.h_sql_sec, dtype=np.int64), "end_sec": np.array(self.h_end_sec, dtype=np.int64),
                "would": np.array(self.h_would, dtype=bool)}


def sla_truth(h: dict[str, np.ndarray], bands_hours: list[float], acceptance_days: int, horizon_sec: int) -> dict[str, object]:
    """The effect as the review measures it: per delay band, the expected acceptance rate of the
    matured, touched hand-overs (would-be SQLs within ``acceptance_days`` × the multiplier of their delay).
    ``h``: :meth:`SalesFloor.handovers`, pooled over every block."""
    mql, touch, sql, end = h["mql_sec"], h["touch_sec"], h["sql_sec"], h["end_sec"]
    hours = (touch - mql) / 3600
    would_in = h["would"] & (end - mql <= acceptance_days * SECONDS_PER_DAY)
    # what the review can see: hand-overs touched before they ended (a lead disqualified before the
    # rep got to it has no follow-up delay), matured over the acceptance window
    touched = touch < np.where(end >= 0, end, horizon_sec)
    matured = (mql + acceptance_days * SECONDS_PER_DAY <= horizon_sec) & touched
    band = np.searchsorted(np.asarray(bands_hours, dtype=float), hours, side="right")
    expected = would_in * follow_up_multiplier(hours)
    rows = []
    for b in range(len(bands_hours) + 1):
        m = matured & (band == b)
        rows.append({"handovers": int(m.sum()), "expected_acceptance": float(expected[m].mean()) if m.any()
                     else None, "realised_acceptance": float(((sql >= 0) & would_in)[m].mean()) if m.any()
                     else None})
    return {"multiplier": f"{EFFECT_FLOOR} + {1 - EFFECT_FLOOR:g}*exp(-hours/{EFFECT_HOURS:g})",
            "bands_hours": list(bands_hours), "acceptance_days": acceptance_days, "by_band": rows,
            "reps": {r[0]: {"median_hours": r[1]} for r in REPS},
            "owner_teams": {r[0]: rep_team(r[0]) for r in REPS}}


def activity_table(
    start: pd.Timestamp, lead_ids: np.ndarray, type_names: list[str], sales_names: list[str],
    lead_side: tuple[np.ndarray, np.ndarray, np.ndarray], touches: tuple[np.ndarray, np.ndarray, np.ndarray],
    first_ids: tuple[int, int] = (0, 0),
) -> pd.DataFrame:
    """The lead's own activities (``A…``, actor ``lead``) then the reps' touches (``S…``, actor ``sales``),
    as categoricals (millions of rows stay small in memory). ``first_ids``: the numbers the block's first
    ``A…`` and ``S…`` ids carry (ids run on across blocks)."""
    a_lead, a_sec, a_type = lead_side
    t_lead, t_sec, t_kind = touches
    cats = list(type_names) + list(sales_names)
    t_type = np.array([cats.index(k) for k in t_kind], dtype=np.int16) if len(t_kind) else np.zeros(0, np.int16)
    types = np.concatenate([a_type.astype(np.int16), t_type])
    props = np.array([PROPERTIES.get(t, "{}") for t in cats])
    seconds = np.concatenate([a_sec, t_sec]).astype(np.int64)
    ids = np.concatenate([np.char.add("A", np.arange(first_ids[0], first_ids[0] + len(a_lead)).astype(str)),
                          np.char.add("S", np.arange(first_ids[1], first_ids[1] + len(t_lead)).astype(str))])
    return pd.DataFrame({
        "activity_id": ids.astype(object),
        "lead_id": pd.Categorical.from_codes(np.concatenate([a_lead, t_lead]).astype(np.int64), categories=lead_ids),
        "occurred_at": pd.Series(pd.to_datetime(start.value // 1000 + seconds * 1_000_000, unit="us", utc=True)),
        "type": pd.Categorical.from_codes(types, categories=cats),
        "properties": pd.Categorical.from_codes(types, categories=props) if len(set(props)) == len(props)
        else props[types],
        "actor": pd.Categorical.from_codes(np.r_[np.zeros(len(a_lead), np.int8), np.ones(len(t_lead), np.int8)],
                                           categories=["lead", "sales"]),
    })
