"""Wire-format routes: the Segment/RudderStack HTTP tracking API and HubSpot webhooks."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from leadscore.serving.http import (
    ERRORS,
    error_response,
    item_size,
    parse_json,
    read_body,
    run_blocking,
    state_of,
)
from leadscore.serving.schemas import BadItem, BatchOut, HubSpotOut
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
    parse_hubspot_events,
    parse_segment_batch,
    verify_hubspot,
)

router = APIRouter()


@router.post("/v1/batch", tags=["wire formats"], response_model=BatchOut, responses=ERRORS)
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
        raise WireError(401, "missing or invalid write key (HTTP basic user) or API key", "Authorization")
    cfg = st.settings.serving
    raw = await read_body(request, cfg.max_batch_bytes)
    raw = decode_body(raw, request.headers.get("content-encoding"), cfg.max_batch_bytes)
    body = parse_json(raw)
    # the Segment HTTP API also accepts the write key in the body instead of the header
    if not header_ok and not (isinstance(body, dict) and key_matches(body.get("writeKey"), st.segment_keys)):
        raise WireError(401, "missing or invalid write key (HTTP basic user or body writeKey) or API key",
                        "Authorization")
    batch = body.get("batch") if isinstance(body, dict) else None
    sizes = [item_size(m) if len(raw) > cfg.max_event_bytes else 0 for m in batch] if isinstance(batch, list) else []
    parsed = parse_segment_batch(body, st.catalogue, {**DEFAULT_EVENT_ALIASES, **cfg.event_aliases},
                                 cfg.max_event_bytes, sizes)
    stored, dupes, _scores = await run_blocking(ingest_and_score, st, parsed) if parsed.events else (0, 0, [])
    errors = [BadItem(index=i, field=f, error=m) for i, f, m in parsed.errors]
    n_leads = len({e.lead_id for _, e in parsed.events if isinstance(e, LeadUpsert)})
    out = BatchOut(stored=stored, duplicates=dupes, leads_updated=n_leads, ignored=parsed.ignored,
                   rejected=len(errors), errors=errors)
    return JSONResponse(out.model_dump(mode="json"))


@router.post("/webhooks/hubspot", tags=["wire formats"], response_model=HubSpotOut, responses=ERRORS)
async def hubspot_webhook(request: Request) -> JSONResponse:
    """HubSpot webhooks v3: contact creation and property changes (``lifecyclestage`` → stage change).

    Verified with ``X-HubSpot-Signature-v3`` over method + URI + raw body + timestamp; requests older
    than 5 minutes (replays) or from the future are refused.
    """
    st = state_of(request)
    if st.hubspot_secret is None:
        raise WireError(401, "HubSpot webhooks are not enabled (no client secret configured)", "X-HubSpot-Signature-v3")
    cfg = st.settings.serving
    raw = await read_body(request, cfg.max_batch_bytes)
    uri = public_uri(request, st)
    verify_hubspot(
        st.hubspot_secret,
        request.method,
        uri,
        raw,
        request.headers.get("x-hubspot-request-timestamp"),
        request.headers.get("x-hubspot-signature-v3"),
        datetime.now(UTC),
        max_age_seconds=cfg.hubspot_max_age_seconds,
    )
    parsed = parse_hubspot_events(parse_json(raw), st.settings.stages.all)
    n_stage = sum(isinstance(e, StageChangeIn) for _, e in parsed.events)
    if parsed.events:
        await run_blocking(store_only, st, parsed)
    errors = [BadItem(index=i, field=f, error=m) for i, f, m in parsed.errors]
    processed = len({i for i, _ in parsed.events})
    out = HubSpotOut(processed=processed, stage_changes=n_stage, ignored=parsed.ignored, rejected=len(errors),
                     errors=errors)
    status = 422 if errors and not parsed.events and not parsed.ignored else 200
    if status == 422:
        return error_response(422, errors[0].error, errors[0].field, errors)
    return JSONResponse(out.model_dump(mode="json"))


def public_uri(request: Request, st: ServingState) -> str:
    """The URI HubSpot signed: the public base URL if we are behind a proxy, else what we received."""
    url = request.url
    path_query = url.path + (f"?{url.query}" if url.query else "")
    if st.public_base_url:
        return st.public_base_url.rstrip("/") + path_query
    return f"{url.scheme}://{url.netloc}{path_query}"
