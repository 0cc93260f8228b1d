"""``GET /leads/{id}/scores``: a lead's score history, paged, newest first, each score with its trend.

Pages are cut by a **cursor** (the last row's moment and audit id), not an offset: the service keeps
appending scores while a client pages, and an offset would then repeat or skip rows; a cursor resumes
exactly after the last row read. ``since`` keeps the scores of moments at or after it. A score's
``trend`` and ``changes`` do not depend on the page or ``since``: they always read the lead's scores
before it (:mod:`serving.trail`).
"""

from __future__ import annotations

import re
from datetime import datetime

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import JSONResponse

from leadscore.serving.http import ERRORS, authorized, error_response, run_blocking
from leadscore.serving.schemas import INT64_MAX, ErrorOut, ScorePage, UtcDatetime
from leadscore.serving.state import ServingState
from leadscore.serving.store_tables import scores_t, to_micros
from leadscore.serving.trail import history_answers, stored_score
from leadscore.serving.wire import WireError
from leadscore.tables import ID_LENGTH, ID_PATTERN

router = APIRouter()

_CURSOR = re.compile(r"^(\d{1,19})-(\d{1,19})$")


def encode_cursor(scored_at_us: int, score_id: int) -> str:
    return f"{scored_at_us}-{score_id}"


def decode_cursor(cursor: str) -> tuple[int, int]:
    """``(scored_at in µs, audit id)`` of a cursor this route handed out; a 422 naming ``cursor`` otherwise."""
    m = _CURSOR.match(cursor)
    if m is None or int(m[1]) > INT64_MAX or int(m[2]) > INT64_MAX:
        raise WireError(422, "not a cursor returned by this route (next_cursor)", "cursor")
    return int(m[1]), int(m[2])


@router.get("/leads/{lead_id}/scores", tags=["scoring"], response_model=ScorePage,
            responses={**ERRORS, 404: {"model": ErrorOut}})
async def get_lead_scores(
    lead_id: str = Path(min_length=1, max_length=ID_LENGTH, pattern=ID_PATTERN),
    since: UtcDatetime | None = Query(None, description="Only scores of moments at or after this time (UTC)."),
    limit: int = Query(50, ge=1, le=1000, description="Scores per page."),
    cursor: str | None = Query(None, max_length=40, description="``next_cursor`` of the previous page."),
    st: ServingState = Depends(authorized),
) -> JSONResponse:
    """The lead's scores, newest first, ``limit`` per page; follow ``next_cursor`` for older ones."""
    after = decode_cursor(cursor) if cursor is not None else None
    out = await run_blocking(score_page, st, lead_id, since, limit, after)
    if out is None:
        return error_response(404, f"unknown lead {lead_id!r}", "lead_id", code="not_found")
    return JSONResponse(out.model_dump(mode="json"))


def score_page(st: ServingState, lead_id: str, since: datetime | None, limit: int,
               after: tuple[int, int] | None) -> ScorePage | None:
    """One page (None for an unknown lead): rows older than ``after``, moments at or after ``since``."""
    c = scores_t.c
    query = sa.select(scores_t).where(c.lead_id == lead_id)
    if since is not None:
        query = query.where(c.scored_at >= to_micros(since))
    if after is not None:
        query = query.where(sa.or_(c.scored_at < after[0], sa.and_(c.scored_at == after[0], c.id < after[1])))
    with st.store.read() as conn:
        if not st.store.lead_exists(conn, lead_id):
            return None
        rows = list(conn.execute(query.order_by(c.scored_at.desc(), c.id.desc()).limit(limit + 1)).mappings())
        more = len(rows) > limit
        rows = rows[:limit]
        scores = history_answers(conn, [stored_score(r) for r in rows])
    last = rows[-1] if rows else None
    return ScorePage(lead_id=lead_id, scores=scores,
                     next_cursor=encode_cursor(int(last["scored_at"]), int(last["id"])) if more and last else None)
