"""Scoring routes: ``POST /activities`` (store, then score), ``POST /score`` (stateless), lead reads."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from leadscore.serving.http import (
    ERRORS,
    authorized,
    error_response,
    item_size,
    openapi_body,
    parse_json,
    read_body,
    require_api_key,
    run_blocking,
    state_of,
)
from leadscore.serving.schemas import (
    ActivitiesOut,
    ActivityBatch,
    ActivityIn,
    BadItem,
    ErrorOut,
    LeadOut,
    ScoreOut,
    ScoreRequest,
)
from leadscore.serving.state import ServingState, ingest_and_score, score_out, score_request
from leadscore.serving.wire import Parsed, WireError, all_validation_fields, decode_body

router = APIRouter()


@router.post(
    "/activities",
    tags=["scoring"],
    response_model=ActivitiesOut,
    responses=ERRORS,
    openapi_extra=openapi_body(ActivityIn, [ActivityBatch]),
)
async def post_activities(request: Request) -> JSONResponse:
    """Store one activity (or ``{"activities": [...]}``) idempotently, then re-score each lead.

    Stored (committed) before the answer. Bad items of a batch are reported by index; the good ones
    are stored and scored. The answer has one score per lead at its latest activity in the request.
    """
    st = state_of(request)
    require_api_key(request, st)
    cfg = st.settings.serving
    raw = await read_body(request, cfg.max_batch_bytes)
    raw = decode_body(raw, request.headers.get("content-encoding"), cfg.max_batch_bytes)
    body = parse_json(raw)
    single = not (isinstance(body, dict) and "activities" in body) and not isinstance(body, list)
    if single:
        if len(raw) > cfg.max_event_bytes:
            raise WireError(413, f"activity is {len(raw)} bytes; the limit is {cfg.max_event_bytes}", "body")
        items, prefix = [body], ""
    else:
        items = body if isinstance(body, list) else body["activities"]
        if not isinstance(items, list):
            raise WireError(422, "must be an array of activities", "activities")
        prefix = "activities"
    check_size = len(raw) > cfg.max_event_bytes
    parsed = Parsed()
    for i, item in enumerate(items):
        where = f"{prefix}[{i}]" if prefix else ""
        if check_size and item_size(item) > cfg.max_event_bytes:
            parsed.errors.append((i, where or "body", f"activity exceeds {cfg.max_event_bytes} bytes"))
            continue
        try:
            parsed.events.append((i, ActivityIn.model_validate(item)))
        except ValidationError as exc:
            for path, msg in all_validation_fields(exc, where):
                parsed.errors.append((i, path, msg))
    errors = [BadItem(index=i, field=f, error=m) for i, f, m in parsed.errors]
    if single and errors:
        return error_response(422, errors[0].error, errors[0].field, errors)
    if not parsed.events and errors:
        return error_response(422, "no valid activity in the batch", prefix, errors)
    stored, dupes, per_lead = await run_blocking(ingest_and_score, st, parsed)
    out = ActivitiesOut(
        stored=stored,
        duplicates=dupes,
        rejected=len({e.index for e in errors}),
        scores=[score_out(r) for r in per_lead],
        errors=errors,
    )
    return JSONResponse(out.model_dump(mode="json"))


@router.post("/score", tags=["scoring"], response_model=ScoreOut, responses=ERRORS)
async def post_score(payload: ScoreRequest, st: ServingState = Depends(authorized)) -> JSONResponse:
    """Score a lead from the history in the request; nothing is stored (what-if, backfills)."""
    result = await run_blocking(score_request, st, payload)
    return JSONResponse(score_out(result).model_dump(mode="json"))


@router.get("/leads/{lead_id}", tags=["scoring"], response_model=LeadOut, responses={**ERRORS, 404: {"model": ErrorOut}})
async def get_lead(request: Request, lead_id: str, limit: int = 50) -> JSONResponse:
    """The lead's latest score (by moment scored), its stage and its score history, newest first."""
    st = state_of(request)
    require_api_key(request, st)
    if not 1 <= limit <= 1000:
        raise WireError(422, "must be between 1 and 1000", "limit")
    out = await run_blocking(_lead_view, st, lead_id, limit)
    if out is None:
        return error_response(404, f"unknown lead {lead_id!r}", "lead_id", code="not_found")
    return JSONResponse(out.model_dump(mode="json"))


def _lead_view(st: ServingState, lead_id: str, limit: int) -> LeadOut | None:
    with st.store.read() as conn:
        if not st.store.lead_exists(conn, lead_id):
            return None
        stage, _ = st.store.current_stage(conn, lead_id)
    history = [score_out(s) for s in st.store.score_history(lead_id, limit)]
    return LeadOut(
        lead_id=lead_id,
        activities=st.store.count_activities(lead_id),
        stage=stage,
        latest=history[0] if history else None,
        history=history,
    )
