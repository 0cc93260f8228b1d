"""Wire-format routes: the Segment/RudderStack HTTP tracking API and HubSpot webhooks.

Credentials come before the body on both: a request without a usable credential header is a 401
before anything is read. Segment also allows the write key inside the body; that key is read only
from a body that passed the size limit, and a body that cannot be decoded or parsed while looking
for it is a 401 too (an unauthenticated caller learns nothing about encodings or the schema).
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from leadscore.serving.http import (
    ERRORS,
    ERRORS_ENCODED,
    error_response,
    item_size,
    openapi_body,
    parse_json,
    read_body,
    run_blocking,
    state_of,
)
from leadscore.serving.hubspot import parse_hubspot_events
from leadscore.serving.routes_scoring import request_context
from leadscore.serving.schemas import BadItem, BatchOut, HubSpotEvent, HubSpotOut, SegmentBatch
from leadscore.serving.state import ServingState, ingest_and_score, store_only
from leadscore.serving.wire import (
    DEFAULT_EVENT_ALIASES,
    LeadUpsert,
    StageChangeIn,
    WireError,
    basic_user,
    bearer_key,
    decode_body,
    key_matches,
    parse_segment_batch,
    verify_hubspot,
)

router = APIRouter()

_SEGMENT_AUTH = "missing or invalid write key (HTTP basic user or body writeKey) or API key"


@router.post("/v1/batch", tags=["wire formats"], response_model=BatchOut, responses=ERRORS_ENCODED,
             openapi_extra=openapi_body(SegmentBatch, limit="Limits: serving.max_batch_bytes per body "
                                        "(inflated gzip included), serving.max_event_bytes per message."))
async def segment_batch(request: Request) -> JSONResponse:
    """Segment HTTP tracking API batch (also what the RudderStack SDKs send, gzipped).

    Auth: HTTP basic with a Segment write key as user name (how the SDKs send it), or an API key.
    ``identify``/``group`` update lead/account properties; ``track``/``page`` become activities keyed
    by ``messageId``. Always 200 when at least parsing succeeded, so SDKs do not retry accepted data;
    bad messages are listed by index.
    """
    st = state_of(request)
    auth = request.headers.get("authorization")
    header_ok = key_matches(basic_user(auth), st.segment_keys) or key_matches(bearer_key(auth), st.api_keys)
    if not header_ok and not st.segment_keys:
        raise WireError(401, _SEGMENT_AUTH, "Authorization")
    cfg = st.settings.serving
    raw = await read_body(request, cfg.max_batch_bytes)
    if header_ok:
        body = parse_json(decode_body(raw, request.headers.get("content-encoding"), cfg.max_batch_bytes),
                          cfg.max_json_depth)
    else:  # the Segment HTTP API also accepts the write key in the body instead of the header
        try:
            body = parse_json(decode_body(raw, request.headers.get("content-encoding"), cfg.max_batch_bytes),
                              cfg.max_json_depth)
        except WireError:
            raise WireError(401, _SEGMENT_AUTH, "Authorization") from None
        if not (isinstance(body, dict) and key_matches(body.get("writeKey"), st.segment_keys)):
            raise WireError(401, _SEGMENT_AUTH, "Authorization")
    batch = body.get("batch") if isinstance(body, dict) else None
    big = len(raw) > cfg.max_event_bytes or request.headers.get("content-encoding") is not None
    sizes = [item_size(m) if big else 0 for m in batch] if isinstance(batch, list) else []
    parsed = parse_segment_batch(body, st.catalogue, {**DEFAULT_EVENT_ALIASES, **cfg.event_aliases},
                                 cfg.max_event_bytes, sizes, request_context(st))
    stored, dupes, _scores = await run_blocking(ingest_and_score, st, parsed) if parsed.events else (0, 0, [])
    errors = [BadItem(index=i, field=f, error=m) for i, f, m in parsed.errors]
    n_leads = len({e.lead_id for _, e in parsed.events if isinstance(e, LeadUpsert)})
    out = BatchOut(stored=stored, duplicates=dupes, leads_updated=n_leads, ignored=parsed.ignored,
                   rejected=len(errors), errors=errors)
    return JSONResponse(out.model_dump(mode="json"))


@router.post("/webhooks/hubspot", tags=["wire formats"], response_model=HubSpotOut, responses=ERRORS,
             openapi_extra=openapi_body(HubSpotEvent, array=True,
                                        limit="Limit: serving.max_batch_bytes per body."))
async def hubspot_webhook(request: Request) -> JSONResponse:
    """HubSpot webhooks v3: contact creation and property changes (``lifecyclestage`` → stage change).

    Verified with ``X-HubSpot-Signature-v3`` over method + URI + raw body + timestamp; requests older
    than 5 minutes (replays) or from the future are refused. The signature and timestamp headers are
    checked before the body is read, the signature itself over the body read under its limit.
    """
    st = state_of(request)
    if st.hubspot_secret is None:
        raise WireError(401, "HubSpot webhooks are not enabled (no client secret configured)", "X-HubSpot-Signature-v3")
    cfg = st.settings.serving
    timestamp = request.headers.get("x-hubspot-request-timestamp")
    signature = request.headers.get("x-hubspot-signature-v3")
    now = datetime.now(UTC)
    # headers alone first: a missing or stale signature is refused before the body is read
    verify_hubspot(st.hubspot_secret, request.method, "", b"", timestamp, signature or "-", now,
                   max_age_seconds=cfg.hubspot_max_age_seconds, check_signature=False)
    raw = await read_body(request, cfg.max_batch_bytes)
    verify_hubspot(st.hubspot_secret, request.method, public_uri(request, st), raw, timestamp, signature, now,
                   max_age_seconds=cfg.hubspot_max_age_seconds)
    parsed = parse_hubspot_events(parse_json(raw, cfg.max_json_depth), st.settings.stages.all, request_context(st))
    n_stage = sum(isinstance(e, StageChangeIn) for _, e in parsed.events)
    if parsed.events:
        await run_blocking(store_only, st, parsed)
    errors = [BadItem(index=i, field=f, error=m) for i, f, m in parsed.errors]
    processed = len({i for i, _ in parsed.events})
    if errors and not parsed.events and not parsed.ignored:
        return error_response(422, errors[0].error, errors[0].field, errors)
    out = HubSpotOut(processed=processed, stage_changes=n_stage, ignored=parsed.ignored, rejected=len(errors),
                     errors=errors)
    return JSONResponse(out.model_dump(mode="json"))


def public_uri(request: Request, st: ServingState) -> str:
    """The URI HubSpot signed: the public base URL if we are behind a proxy, else what we received."""
    url = request.url
    path_query = url.path + (f"?{url.query}" if url.query else "")
    if st.public_base_url:
        return st.public_base_url.rstrip("/") + path_query
    return f"{url.scheme}://{url.netloc}{path_query}"
