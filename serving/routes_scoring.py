"""Scoring routes: ``POST /activities`` (store, then score), ``POST /score`` (stateless), lead reads.

Each route checks the API key from the headers, then reads the body under its size limit, then
validates; bodies are parsed by hand (not by FastAPI) so every error has the one error shape and a
batch can keep its good items while reporting the bad ones by index.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError

from leadscore.serving.http import (
    ERRORS,
    ERRORS_ENCODED,
    authorized,
    error_response,
    item_size,
    openapi_body,
    parse_json,
    read_body,
    run_blocking,
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
    validation_context,
)
from leadscore.serving.state import ServingState, ingest_score_answer, score_request
from leadscore.serving.trail import answers, history_answers
from leadscore.serving.wire import Parsed, WireError, all_validation_fields, decode_body
from leadscore.tables import ID_LENGTH, ID_PATTERN

router = APIRouter()

def request_context(st: ServingState) -> dict[str, Any]:
    """Validation context of a request arriving now: the accepted timestamp window."""
    return validation_context(st.settings.serving.time_window.bounds(datetime.now(UTC)))


def _limits(st_doc: str) -> str:
    return st_doc + " Limits: `serving.max_batch_bytes` per body (500 KB by default, gzip inflated included), " \
                    "`serving.max_event_bytes` per activity (32 KB), JSON nesting `serving.max_json_depth` (32)."


@router.post(
    "/activities",
    tags=["scoring"],
    response_model=ActivitiesOut,
    responses=ERRORS_ENCODED,
    openapi_extra=openapi_body(ActivityIn, [ActivityBatch], limit=_limits("One activity or a batch.")),
)
async def post_activities(request: Request, st: ServingState = Depends(authorized)) -> Response:
    """Store one activity (or ``{"activities": [...]}``) idempotently, then re-score each lead.

    Stored (committed) before the answer. Bad items of a batch are reported by index; the good ones
    are stored and scored. The answer has one score per lead at its latest activity in the request.
    """
    cfg = st.settings.serving
    raw = await read_body(request, cfg.max_batch_bytes)
    raw = decode_body(raw, request.headers.get("content-encoding"), cfg.max_batch_bytes)
    body = parse_json(raw, cfg.max_json_depth)
    single = not (isinstance(body, dict) and "activities" in body) and not isinstance(body, list)
    if single:
        if len(raw) > cfg.max_event_bytes:
            raise WireError(413, f"activity is {len(raw)} bytes; the limit is {cfg.max_event_bytes}", "body")
        items, prefix = [body], ""
    elif isinstance(body, list):
        items, prefix = body, "activities"
    else:
        try:  # the wrapper itself: an array under "activities", no other key
            items = ActivityBatch.model_validate(body).activities
        except ValidationError as exc:
            field, message = all_validation_fields(exc)[0]
            raise WireError(422, message, field) from None
        prefix = "activities"
    parsed = validate_activities(items, prefix, len(raw) > cfg.max_event_bytes, cfg.max_event_bytes,
                                 request_context(st))
    errors = [BadItem(index=i, field=f, error=m) for i, f, m in parsed.errors]
    if single and errors:
        return error_response(422, errors[0].error, errors[0].field, errors)
    if not parsed.events and errors:
        return error_response(422, "no valid activity in the batch", prefix, errors)
    stored, dupes, scores = await run_blocking(ingest_and_answer, st, parsed)
    out = ActivitiesOut(stored=stored, duplicates=dupes, rejected=len({e.index for e in errors}), scores=scores,
                        errors=errors)
    return json_response(out)


def ingest_and_answer(st: ServingState, parsed: Parsed) -> tuple[int, int, list[ScoreOut]]:
    """Store, score and build the score answers in one trip to the thread pool: each trip is a hand-over
    to another thread and back (and, under load, a wait for a free one), for work that blocks anyway."""
    stored, dupes, _, scores = ingest_score_answer(st, parsed)
    return stored, dupes, scores


def json_response(model: BaseModel) -> Response:
    """``model`` as a JSON answer, serialized by pydantic's own encoder in one step (no intermediate
    dict of JSON-ready values re-encoded by ``json.dumps``: about a third of the cost)."""
    return Response(model.model_dump_json(), media_type="application/json")


def validate_activities(items: list[Any], prefix: str, check_size: bool, max_event_bytes: int,
                        context: dict[str, Any]) -> Parsed:
    """Each item validated on its own: the valid ones as events, every invalid one by index and field."""
    parsed = Parsed()
    for i, item in enumerate(items):
        where = f"{prefix}[{i}]" if prefix else ""
        if check_size and item_size(item) > max_event_bytes:
            parsed.errors.append((i, where or "body", f"activity exceeds {max_event_bytes} bytes"))
            continue
        try:
            parsed.events.append((i, ActivityIn.model_validate(item, context=context)))
        except ValidationError as exc:
            for path, msg in all_validation_fields(exc, where):
                parsed.errors.append((i, path, msg))
    return parsed


@router.post("/score", tags=["scoring"], response_model=ScoreOut, responses=ERRORS,
             openapi_extra=openapi_body(ScoreRequest, limit=_limits("A lead with its history.")))
async def post_score(request: Request, st: ServingState = Depends(authorized)) -> Response:
    """Score a lead from the history in the request; nothing is stored (what-if, backfills)."""
    cfg = st.settings.serving
    body = parse_json(await read_body(request, cfg.max_batch_bytes), cfg.max_json_depth)
    try:
        payload = ScoreRequest.model_validate(body, context=request_context(st))
    except ValidationError as exc:
        bad = [BadItem(index=0, field=f, error=m) for f, m in all_validation_fields(exc)]
        return error_response(422, bad[0].error, bad[0].field, bad)
    answer = await run_blocking(lambda: answers(st, [score_request(st, payload)])[0])
    return json_response(answer)


@router.get("/leads/{lead_id}", tags=["scoring"], response_model=LeadOut, responses={**ERRORS, 404: {"model": ErrorOut}})
async def get_lead(
    lead_id: str = Path(min_length=1, max_length=ID_LENGTH, pattern=ID_PATTERN),
    limit: int = Query(50, ge=1, le=1000, description="Most recent scores returned."),
    st: ServingState = Depends(authorized),
) -> JSONResponse:
    """The lead's latest score (by moment scored), its stage and its score history, newest first.

    ``lead_id`` follows the one id rule of every stored id (no ``/``, no control characters, at most
    128 characters), so every stored lead can be read back here.
    """
    out = await run_blocking(_lead_view, st, lead_id, limit)
    if out is None:
        return error_response(404, f"unknown lead {lead_id!r}", "lead_id", code="not_found")
    return JSONResponse(out.model_dump(mode="json"))


def _lead_view(st: ServingState, lead_id: str, limit: int) -> LeadOut | None:
    with st.store.read() as conn:
        if not st.store.lead_exists(conn, lead_id):
            return None
        stage, _ = st.store.current_stage(conn, lead_id)
    rows = st.store.score_history(lead_id, limit)
    with st.store.read() as conn:
        history = history_answers(conn, rows)
    return LeadOut(
        lead_id=lead_id,
        activities=st.store.count_activities(lead_id),
        stage=stage,
        latest=history[0] if history else None,
        history=history,
    )
