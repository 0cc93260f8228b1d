"""The HTTP face of the scoring service: a FastAPI app that BentoML mounts and serves.

Why FastAPI under BentoML rather than ``@bentoml.api`` methods: the CRM contracts need path
parameters (``GET /leads/{lead_id}``), our own status codes (401, 413, partial batches), gzip
request bodies (RudderStack), HTTP basic auth (Segment) and an HMAC over the raw body (HubSpot).
BentoML still owns the process: workers, ``/livez`` ``/readyz`` ``/metrics``, ``bentoml build``.

The app is created once at import (cheap: routes only). The running service puts a
:class:`ServingState` on ``app.state.leadscore`` when it starts; requests that arrive before that
get 503, which is what readiness reports too.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy.engine import Connection

from leadscore.config import Settings
from leadscore.history import CRMHistory
from leadscore.serving.schemas import (
    AccountProperties,
    ActivitiesOut,
    ActivityBatch,
    ActivityIn,
    BadItem,
    BatchOut,
    ErrorOut,
    HubSpotOut,
    LeadOut,
    Reasons,
    ScoreOut,
    ScoreRequest,
)
from leadscore.serving.scoring import Scorer, ScoreResult
from leadscore.serving.store import EventStore, StoredScore, _rows_frame, empty_frame, to_micros
from leadscore.serving.wire import (
    DEFAULT_EVENT_ALIASES,
    Event,
    LeadUpsert,
    Parsed,
    StageChangeIn,
    WireError,
    all_validation_fields,
    basic_user,
    bearer_key,
    decode_body,
    key_matches,
    parse_hubspot_events,
    parse_segment_batch,
    verify_hubspot,
)

log = logging.getLogger("leadscore.serving")


def _env_list(name: str) -> list[str]:
    return [k.strip() for k in os.environ.get(name, "").split(",") if k.strip()]


@dataclass
class ServingState:
    """Everything a request needs: config, the loaded model, the event store, the secrets."""

    settings: Settings
    scorer: Scorer
    store: EventStore
    api_keys: list[str]
    segment_keys: list[str]
    hubspot_secret: str | None
    public_base_url: str | None = None
    started_at: float = field(default_factory=time.time)

    @classmethod
    def from_env(cls, settings: Settings, scorer: Scorer, store: EventStore) -> ServingState:
        """Secrets come from the environment variables named in ``serving:``, never from YAML."""
        cfg = settings.serving
        return cls(
            settings=settings,
            scorer=scorer,
            store=store,
            api_keys=_env_list(cfg.api_keys_env),
            segment_keys=_env_list(cfg.segment_write_keys_env),
            hubspot_secret=os.environ.get(cfg.hubspot_client_secret_env) or None,
            public_base_url=os.environ.get(cfg.public_base_url_env) or None,
        )

    @property
    def catalogue(self) -> set[str]:
        return set(self.settings.activity_names)

    def warm_up(self) -> None:
        """Score a made-up lead once, so the first real request does not pay for loading the
        compiled feature kernel and building the LightGBM predictors (seconds, not milliseconds)."""
        at = datetime(2026, 1, 2, tzinfo=UTC)
        req = ScoreRequest.model_validate(
            {
                "lead": {"lead_id": "warm-up", "created_at": "2026-01-01T00:00:00Z", "job_title": "CTO"},
                "account": {"account_id": "warm-up-account", "employees": 100},
                "activities": [{"occurred_at": at.isoformat(), "type": name} for name in sorted(self.catalogue)],
            }
        )
        _score_stateless(self, req)

    # ------------------------------------------------------------------------------- ingestion

    def activity_row(self, a: ActivityIn, received: int) -> dict[str, Any]:
        """The stored form; unknown types become ``other`` with the original kept in properties."""
        typ = a.type.strip().lower()
        props = dict(a.properties or {})
        if typ not in self.catalogue:
            props.setdefault("original_type", a.type)
            typ = "other"
        return {
            "activity_id": a.activity_id,
            "lead_id": a.lead_id,
            "occurred_at": to_micros(pd.Timestamp(a.occurred_at)),
            "type": typ,
            "properties": json.dumps(props, default=str) if props else None,
            "received_at": received,
        }

    def store_events(self, conn: Connection, events: list[tuple[int, Event]]) -> tuple[int, int, set[str], dict[str, list[tuple[pd.Timestamp, bool]]]]:
        """Write events in order inside ``conn``'s transaction.

        Returns (new activities, duplicates, leads whose properties changed, per lead the times of
        the activities in this request with whether each was new).
        """
        received = to_micros(pd.Timestamp(datetime.now(UTC)))
        stored = dupes = 0
        leads_touched: set[str] = set()
        per_lead: dict[str, list[tuple[pd.Timestamp, bool]]] = defaultdict(list)
        for _, ev in events:
            if isinstance(ev, ActivityIn):
                at = pd.Timestamp(ev.occurred_at)
                self._upsert_props(conn, ev.lead_id, ev.lead, ev.account, at)
                new = self.store.add_activities(conn, [self.activity_row(ev, received)])[0]
                stored += int(new)
                dupes += int(not new)
                per_lead[ev.lead_id].append((at, new))
            elif isinstance(ev, LeadUpsert):
                self._upsert_props(conn, ev.lead_id, ev.props, ev.account, pd.Timestamp(ev.at))
                leads_touched.add(ev.lead_id)
            elif isinstance(ev, StageChangeIn):
                self.store.upsert_lead(conn, ev.lead_id, {}, pd.Timestamp(ev.at))
                self.store.add_stage_change(conn, ev.lead_id, ev.stage, pd.Timestamp(ev.at), ev.set_by)
        return stored, dupes, leads_touched, per_lead

    def _upsert_props(
        self, conn: Connection, lead_id: str, lead: Any, account: AccountProperties | None, at: pd.Timestamp
    ) -> None:
        lead_props = lead.model_dump(exclude_none=True) if lead is not None else {}
        if account is not None:
            self.store.upsert_account(conn, account.account_id, account.model_dump(exclude_none=True), at)
            lead_props.setdefault("account_id", account.account_id)
        if lead_props.get("account_id") and account is None:
            # A lead pointing at an account we have never seen: create the account shell so the
            # account roll-ups (colleagues, opportunities) have a row to hang on.
            self.store.upsert_account(conn, lead_props["account_id"], {}, at)
        self.store.upsert_lead(conn, lead_id, lead_props, at)

    # ------------------------------------------------------------------------------- scoring

    def score_stored(self, conn: Connection, lead_id: str, as_of: pd.Timestamp) -> tuple[ScoreResult, pd.Timestamp]:
        """Score a stored lead at ``as_of`` from exactly the history known up to then.

        Also returns since when the lead holds the resulting stage (for recycling and the audit).
        """
        history = self.store.load_lead_history(conn, lead_id, as_of)
        previous, since = self.store.current_stage(conn, lead_id, as_of)
        days = None if since is None else max((as_of - since).total_seconds(), 0.0) / 86400.0
        result = self.scorer.score(history, lead_id, as_of, previous, days_in_stage=days)
        stage_since = since if (since is not None and result.stage == previous) else as_of
        return result, stage_since

    def rescore_after_ingest(self, per_lead: dict[str, list[tuple[pd.Timestamp, bool]]]) -> list[ScoreResult]:
        """One score per lead, at the latest activity time of this request.

        A late activity (older than the lead's newest score) also refreshes the newest score, so
        ``GET /leads/{id}`` reflects everything known, while the answer is the score at the time the
        activity happened. Retries of stored activities are answered but not re-audited.
        """
        results: list[ScoreResult] = []
        for lead_id, items in per_lead.items():
            as_of = max(t for t, _ in items)
            any_new = any(new for _, new in items)
            # reads and the model outside the write lock; each score appended in its own short write
            with self.store.read() as conn:
                latest = self.store.latest_scored_at(conn, lead_id) if any_new else None
                result, since = self.score_stored(conn, lead_id, as_of)
            if any_new:
                with self.store.begin() as conn:
                    self.store.append_score(conn, _stored(result, since))
            if latest is not None and latest > as_of:
                with self.store.read() as conn:  # sees the score just appended as the previous stage
                    refreshed = _stored(*self.score_stored(conn, lead_id, latest))
                with self.store.begin() as conn:
                    self.store.append_score(conn, refreshed)
            results.append(result)
        return results


def _stored(r: ScoreResult, stage_since: pd.Timestamp) -> StoredScore:
    return StoredScore(
        lead_id=r.lead_id,
        scored_at=r.scored_at,
        computed_at=pd.Timestamp(datetime.now(UTC)),
        p_sql=r.p_sql,
        p_opportunity=r.p_opportunity,
        stage=r.stage,
        previous_stage=r.previous_stage,
        model_version=r.model_version,
        reasons=r.reasons,
        stage_since=stage_since,
    )


def score_out(r: ScoreResult | StoredScore) -> ScoreOut:
    return ScoreOut(
        lead_id=r.lead_id,
        scored_at=r.scored_at.to_pydatetime(),
        p_sql=r.p_sql,
        p_opportunity=r.p_opportunity,
        stage=r.stage,
        previous_stage=r.previous_stage,
        reasons=Reasons(positive=list(r.reasons.get("positive", [])), negative=list(r.reasons.get("negative", []))),
        model_version=r.model_version,
    )


# ------------------------------------------------------------------------------------ the app

app = FastAPI(
    title="leadscore",
    version="1",
    description="Calibrated lead scores, lifecycle stages and reasons, on every CRM activity.",
    docs_url="/api-docs",
    openapi_url="/openapi.json",
)


def state_of(request: Request) -> ServingState:
    st = getattr(request.app.state, "leadscore", None)
    if st is None:
        raise WireError(503, "the service is starting: model not loaded yet")
    assert isinstance(st, ServingState)
    return st


def _error(status: int, message: str, field: str | None = None, errors: list[BadItem] | None = None,
           code: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": message, "field": field}
    if errors is not None:
        body["errors"] = [e.model_dump() for e in errors]
    # Segment/RudderStack SDKs read "code" and "message" from error bodies.
    body["code"] = code or {401: "unauthorized", 413: "payload_too_large", 503: "unavailable"}.get(status, "invalid")
    body["message"] = message if field is None else f"{field}: {message}"
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


@app.exception_handler(WireError)
async def _wire_error(_: Request, exc: WireError) -> JSONResponse:
    return _error(exc.status, exc.message, exc.field)


@app.exception_handler(RequestValidationError)
async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    errs = exc.errors()
    first = errs[0] if errs else {"loc": (), "msg": "invalid request"}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "path", "query")]
    return _error(422, str(first.get("msg")), ".".join(loc) or "body")


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing (413) past ``limit`` bytes without reading the rest into memory."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise WireError(413, f"body is {declared} bytes; the limit is {limit}", "body")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise WireError(413, f"body exceeds {limit} bytes", "body")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(raw: bytes) -> Any:
    if not raw.strip():
        raise WireError(400, "empty body: expected JSON", "body")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WireError(400, f"body is not valid JSON: {exc}", "body") from None


def require_api_key(request: Request, st: ServingState) -> None:
    if not key_matches(bearer_key(request.headers.get("authorization")), st.api_keys):
        raise WireError(401, "missing or invalid API key (Authorization: Bearer <key>)", "Authorization")


def _item_size(item: Any) -> int:
    return len(json.dumps(item, separators=(",", ":"), default=str).encode())


def _openapi_body(model: type[Any], alternatives: list[type[Any]] | None = None) -> dict[str, Any]:
    """OpenAPI request body for routes that read the raw body themselves (to validate per item)."""
    names = [model.__name__, *[m.__name__ for m in alternatives or []]]
    refs = [{"$ref": f"#/components/schemas/{n}"} for n in names]
    schema = refs[0] if len(refs) == 1 else {"oneOf": refs}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


_ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorOut} for s in (400, 401, 413, 422, 503)
}


@app.get("/health", tags=["ops"])
def health() -> dict[str, str]:
    """Liveness: the process answers (no model or database needed)."""
    return {"status": "ok"}


@app.get("/ready", tags=["ops"], responses={503: {"model": ErrorOut}})
def ready(request: Request) -> JSONResponse:
    """Readiness: model loaded (pinned version reported) and the event store reachable."""
    st = getattr(request.app.state, "leadscore", None)
    if st is None:
        return _error(503, "model not loaded yet")
    try:
        st.store.ping()
    except Exception as exc:
        return _error(503, f"event store unreachable: {exc}", "event_store")
    return JSONResponse(
        {
            "status": "ready",
            "model_version": st.scorer.version,
            "model_uri": st.scorer.source,
            "schema_hash": st.scorer.schema_hash,
            "event_store": st.store.engine.url.render_as_string(hide_password=True),
            "auth": {"api_keys": len(st.api_keys), "segment_write_keys": len(st.segment_keys),
                     "hubspot_secret": st.hubspot_secret is not None},
        }
    )


@app.post(
    "/activities",
    tags=["scoring"],
    response_model=ActivitiesOut,
    responses=_ERRORS,
    openapi_extra=_openapi_body(ActivityIn, [ActivityBatch]),
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
        if check_size and _item_size(item) > cfg.max_event_bytes:
            parsed.errors.append((i, where or "body", f"activity exceeds {cfg.max_event_bytes} bytes"))
            continue
        try:
            parsed.events.append((i, ActivityIn.model_validate(item)))
        except ValidationError as exc:
            for path, msg in all_validation_fields(exc, where):
                parsed.errors.append((i, path, msg))
    errors = [BadItem(index=i, field=f, error=m) for i, f, m in parsed.errors]
    if single and errors:
        return _error(422, errors[0].error, errors[0].field, errors)
    if not parsed.events and errors:
        return _error(422, "no valid activity in the batch", prefix, errors)
    stored, dupes, per_lead = await _run(_ingest_and_score, st, parsed)
    out = ActivitiesOut(
        stored=stored,
        duplicates=dupes,
        rejected=len({e.index for e in errors}),
        scores=[score_out(r) for r in per_lead],
        errors=errors,
    )
    return JSONResponse(out.model_dump(mode="json"))


async def _run(fn: Any, *args: Any) -> Any:
    """Blocking work (SQL, pandas, LightGBM) off the event loop."""
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn, *args)


def _ingest_and_score(st: ServingState, parsed: Parsed) -> tuple[int, int, list[ScoreResult]]:
    with st.store.begin() as conn:
        stored, dupes, _, per_lead = st.store_events(conn, parsed.events)
    # committed: from here on a crash loses no event, only the score (which is recomputable)
    return stored, dupes, st.rescore_after_ingest(per_lead)


def authorized(request: Request) -> ServingState:
    """Dependency form of the API-key check: FastAPI runs it before validating the body, so an
    unauthenticated caller learns nothing about the request schema (401, not 422)."""
    st = state_of(request)
    require_api_key(request, st)
    return st


@app.post("/score", tags=["scoring"], response_model=ScoreOut, responses=_ERRORS)
async def post_score(payload: ScoreRequest, st: ServingState = Depends(authorized)) -> JSONResponse:
    """Score a lead from the history in the request; nothing is stored (what-if, backfills)."""
    result = await _run(_score_stateless, st, payload)
    return JSONResponse(score_out(result).model_dump(mode="json"))


def _score_stateless(st: ServingState, req: ScoreRequest) -> ScoreResult:
    from leadscore.tables import ACCOUNTS, ACTIVITIES, LEADS, OPPORTUNITIES, STAGE_CHANGES

    if req.previous_stage is not None and req.previous_stage not in st.settings.stages.all:
        raise WireError(422, f"unknown stage {req.previous_stage!r}; known: {st.settings.stages.all}", "previous_stage")
    times = [a.occurred_at for a in req.activities]
    as_of = pd.Timestamp(req.as_of or (max(times) if times else datetime.now(UTC)))
    lead = req.lead.model_dump()
    if lead.get("created_at") is None:
        lead["created_at"] = min([*times, as_of.to_pydatetime()])
    if req.account is not None:
        lead["account_id"] = lead.get("account_id") or req.account.account_id
    account_rows = []
    if req.account is not None:
        acc = req.account.model_dump()
        acc["created_at"] = acc.get("created_at") or lead["created_at"]
        account_rows.append(acc)
    received = to_micros(as_of)
    acts = []
    for i, a in enumerate(req.activities):
        row = st.activity_row(
            ActivityIn(activity_id=a.activity_id or f"request-{i}", lead_id=req.lead.lead_id, occurred_at=a.occurred_at,
                       type=a.type, properties=a.properties),
            received,
        )
        acts.append(row)

    def micros(rows: list[dict[str, Any]], cols: tuple[str, ...]) -> list[dict[str, Any]]:
        return [{k: (to_micros(pd.Timestamp(v)) if k in cols and v is not None else v) for k, v in r.items()}
                for r in rows]

    history = CRMHistory(
        accounts=_rows_frame(micros(account_rows, ("created_at",)), ACCOUNTS),
        leads=_rows_frame(micros([lead], ("created_at",)), LEADS),
        activities=_rows_frame([r for r in acts if r["occurred_at"] <= received], ACTIVITIES).sort_values(
            ["occurred_at", "activity_id"], ignore_index=True
        ),
        stage_changes=empty_frame(STAGE_CHANGES),
        opportunities=empty_frame(OPPORTUNITIES),
        cutoff=as_of,
    )
    return st.scorer.score(history, req.lead.lead_id, as_of, req.previous_stage, days_in_stage=None)


@app.get("/leads/{lead_id}", tags=["scoring"], response_model=LeadOut, responses={**_ERRORS, 404: {"model": ErrorOut}})
async def get_lead(request: Request, lead_id: str, limit: int = 50) -> JSONResponse:
    """The lead's latest score (by moment scored), its stage and its score history, newest first."""
    st = state_of(request)
    require_api_key(request, st)
    if not 1 <= limit <= 1000:
        raise WireError(422, "must be between 1 and 1000", "limit")
    out = await _run(_lead_view, st, lead_id, limit)
    if out is None:
        return _error(404, f"unknown lead {lead_id!r}", "lead_id", code="not_found")
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


@app.post("/v1/batch", tags=["wire formats"], response_model=BatchOut, responses=_ERRORS)
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
    sizes = [_item_size(m) if len(raw) > cfg.max_event_bytes else 0 for m in batch] if isinstance(batch, list) else []
    parsed = parse_segment_batch(body, st.catalogue, {**DEFAULT_EVENT_ALIASES, **cfg.event_aliases},
                                 cfg.max_event_bytes, sizes)
    stored, dupes, _scores = await _run(_ingest_and_score, st, parsed) if parsed.events else (0, 0, [])
    errors = [BadItem(index=i, field=f, error=m) for i, f, m in parsed.errors]
    n_leads = len({e.lead_id for _, e in parsed.events if isinstance(e, LeadUpsert)})
    out = BatchOut(stored=stored, duplicates=dupes, leads_updated=n_leads, ignored=parsed.ignored,
                   rejected=len(errors), errors=errors)
    return JSONResponse(out.model_dump(mode="json"))


@app.post("/webhooks/hubspot", tags=["wire formats"], response_model=HubSpotOut, responses=_ERRORS)
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
    uri = _public_uri(request, st)
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
        await _run(_store_only, st, parsed)
    errors = [BadItem(index=i, field=f, error=m) for i, f, m in parsed.errors]
    processed = len({i for i, _ in parsed.events})
    out = HubSpotOut(processed=processed, stage_changes=n_stage, ignored=parsed.ignored, rejected=len(errors),
                     errors=errors)
    status = 422 if errors and not parsed.events and not parsed.ignored else 200
    if status == 422:
        return _error(422, errors[0].error, errors[0].field, errors)
    return JSONResponse(out.model_dump(mode="json"))


def _store_only(st: ServingState, parsed: Parsed) -> None:
    with st.store.begin() as conn:
        st.store_events(conn, parsed.events)


def _public_uri(request: Request, st: ServingState) -> str:
    """The URI HubSpot signed: the public base URL if we are behind a proxy, else what we received."""
    url = request.url
    path_query = url.path + (f"?{url.query}" if url.query else "")
    if st.public_base_url:
        return st.public_base_url.rstrip("/") + path_query
    return f"{url.scheme}://{url.netloc}{path_query}"


def _add_component_schemas() -> None:
    """Publish the request models that routes validate by hand, so the OpenAPI document is complete."""
    from fastapi.openapi.utils import get_openapi

    def custom_openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        comps = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (ActivityIn, ActivityBatch):
            js = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, sub in js.pop("$defs", {}).items():
                comps.setdefault(name, sub)
            comps[model.__name__] = js
        app.openapi_schema = schema
        return schema

    app.openapi = custom_openapi  # type: ignore[method-assign]


_add_component_schemas()
