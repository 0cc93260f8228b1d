"""The score trail: a lead's previous scores from the ``scores`` audit table, and answers that carry
``trend`` and ``changes`` (:mod:`training.trend` holds the rule).

A moment the service scored more than once (a late activity or a colleague's refreshed it) counts
once, as its newest row: that is the score the lead held for that moment. "Previous" means scored at
an earlier moment than the score being annotated, so a score answered now for a late activity is
compared with the scores that came before it in the lead's life, not with later ones.

Used by the routes (``POST /activities``, ``POST /score``, ``GET /leads/{id}``, ``GET /leads/{id}/scores``),
``leadscore score`` (previous scores before ``--at``) and ``leadscore scores export``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from leadscore.serving.store_tables import from_micros, scores_t, to_micros
from leadscore.training.trend import TREND_WINDOW, PastScore, annotate

if TYPE_CHECKING:
    import pandas as pd

    from leadscore.serving.schemas import ScoreOut
    from leadscore.serving.scoring import ScoreResult
    from leadscore.serving.state import ServingState
    from leadscore.serving.store import StoredScore

#: previous scores the rule reads
PREVIOUS = TREND_WINDOW - 1
#: leads per ``IN (...)`` (well under every backend's bound-parameter limit)
_IN_CHUNK = 500


def _past(reasons: Any, p_sql: Any) -> PastScore:
    r = json.loads(reasons) if isinstance(reasons, str) else reasons
    return PastScore(p_sql=float(p_sql), reasons=r)


def previous_scores(conn: Connection, lead_ids: Iterable[str], before: pd.Timestamp,
                    n: int = PREVIOUS) -> dict[str, list[PastScore]]:
    """Per lead, its last ``n`` scored moments strictly before ``before``, newest first (newest row each)."""
    out: dict[str, list[PastScore]] = {}
    ids = list(dict.fromkeys(lead_ids))
    cut = to_micros(before)
    for start in range(0, len(ids), _IN_CHUNK):
        newest = (sa.select(scores_t.c.lead_id, scores_t.c.scored_at, sa.func.max(scores_t.c.id).label("id"))
                  .where(scores_t.c.lead_id.in_(ids[start : start + _IN_CHUNK]), scores_t.c.scored_at < cut)
                  .group_by(scores_t.c.lead_id, scores_t.c.scored_at).subquery())
        ranked = sa.select(newest.c.id, sa.func.row_number().over(
            partition_by=newest.c.lead_id, order_by=newest.c.scored_at.desc()).label("rn")).subquery()
        rows = conn.execute(
            sa.select(scores_t.c.lead_id, scores_t.c.p_sql, scores_t.c.reasons)
            .join(ranked, ranked.c.id == scores_t.c.id).where(ranked.c.rn <= n)
            .order_by(scores_t.c.lead_id, scores_t.c.scored_at.desc()))
        for lead, p, reasons in rows:
            out.setdefault(str(lead), []).append(_past(reasons, p))
    return out


def answers(st: ServingState, results: Sequence[ScoreResult], conn: Connection | None = None) -> list[ScoreOut]:
    """The score answers of fresh scores (``POST /activities``, ``POST /score``), trend and changes included;
    read on ``conn`` when given (the request's own connection), else on one of their own."""
    from leadscore.serving.state import score_out

    if conn is None:
        if not results:
            return []
        with st.store.read() as own:
            return answers(st, results, own)
    out = []
    for r in results:
        previous = [_past(reasons, p) for p, reasons in st.store.previous_scores(conn, r.lead_id, r.scored_at,
                                                                                    PREVIOUS)]
        trend, changes = annotate(r.p_sql, r.reasons, previous)
        out.append(score_out(r, trend, changes))
    return out


def stored_score(r: Any) -> StoredScore:
    """An audit row (a SQLAlchemy mapping) as the store's :class:`StoredScore`."""
    from leadscore.serving.store import StoredScore

    return StoredScore(lead_id=r["lead_id"], scored_at=from_micros(int(r["scored_at"])),
                       computed_at=from_micros(int(r["computed_at"])), p_sql=float(r["p_sql"]),
                       p_opportunity=float(r["p_opportunity"]), stage=r["stage"], previous_stage=r["previous_stage"],
                       model_version=r["model_version"], reasons=json.loads(r["reasons"]),
                       stage_since=from_micros(int(r["stage_since"])), band=r["band"])


def history_answers(conn: Connection, rows: Sequence[StoredScore]) -> list[ScoreOut]:
    """Answers for a contiguous run of one lead's audit rows, newest first (as they are read).

    Each row's previous scores are the older moments of the run itself, then the moments before the
    run (one query), newest row per moment.
    """
    from leadscore.serving.state import score_out

    if not rows:
        return []
    lead = rows[0].lead_id
    context = previous_scores(conn, [lead], rows[-1].scored_at).get(lead, [])
    out: list[ScoreOut] = []
    for i, row in enumerate(rows):
        earlier: list[PastScore] = []
        seen: set[pd.Timestamp] = set()
        for older in rows[i + 1 :]:
            if len(earlier) >= PREVIOUS:
                break
            if older.scored_at < row.scored_at and older.scored_at not in seen:
                seen.add(older.scored_at)
                earlier.append(PastScore(older.p_sql, older.reasons))
        trend, changes = annotate(row.p_sql, row.reasons, (earlier + context)[:PREVIOUS])
        out.append(score_out(row, trend, changes))
    return out
