"""The HTTP face of the scoring service: :func:`create_app` builds a FastAPI app around one state.

Why FastAPI under BentoML rather than ``@bentoml.api`` methods: the CRM contracts need path
parameters (``GET /leads/{lead_id}``), our own status codes (401, 413, partial batches), gzip
request bodies (RudderStack), HTTP basic auth (Segment) and an HMAC over the raw body (HubSpot).
BentoML still owns the process: workers, ``/livez`` ``/readyz`` ``/metrics``, ``bentoml build``.

Each call of :func:`create_app` returns a fresh app bound to the :class:`ServingState` it is given
(settings, model, event store, secrets); nothing is shared through module globals, so a test can
build as many apps as it likes in one process: ``TestClient(create_app(state))``. The routes live
by concept in ``routes_scoring`` (activities, score, lead reads) and ``routes_webhooks`` (Segment,
HubSpot); errors, limits and auth in ``http``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from leadscore.serving import routes_accounts, routes_history, routes_scoring, routes_webhooks
from leadscore.serving.http import error_response, install_error_handlers, state_of
from leadscore.serving.openapi import install_docs
from leadscore.serving.schemas import ErrorOut
from leadscore.serving.stale import status as stale_status
from leadscore.serving.state import ServingState

TITLE = "leadscore"
DESCRIPTION = "Calibrated lead scores, lifecycle stages and reasons, on every CRM activity."


def create_app(state: ServingState) -> FastAPI:
    """A new FastAPI app serving ``state``: ops, scoring and wire-format routes, our error bodies."""
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        """The background rescoring of stale leads runs while the app does (:mod:`serving.stale`).

        Under BentoML the mounted app gets no lifespan events; the service starts and stops the
        worker itself (:class:`~leadscore.serving.service.LeadScoreService`). Both are idempotent."""
        started = state.stale_worker is None or not state.stale_worker.running
        if started:
            state.start_stale_worker()
        try:
            yield
        finally:
            if started:
                state.stop_stale_worker()

    app = FastAPI(title=TITLE, version="1", description=DESCRIPTION, docs_url=None, redoc_url=None,
                  openapi_url=None, lifespan=lifespan)
    app.state.leadscore = state
    install_error_handlers(app)
    app.get("/health", tags=["ops"])(health)
    app.get("/ready", tags=["ops"], responses={503: {"model": ErrorOut}})(ready)
    app.include_router(routes_scoring.router)
    app.include_router(routes_webhooks.router)
    app.include_router(routes_history.router)
    app.include_router(routes_accounts.router)
    install_docs(app)
    return app


def health() -> dict[str, str]:
    """Liveness: the process answers (no model or database needed)."""
    return {"status": "ok"}


def ready(request: Request) -> JSONResponse:
    """Readiness: model loaded (pinned version reported) and the event store reachable.

    Also ``stale_leads``: how many leads are marked for background rescoring (0 once every latest
    stored score is the score of the stored history; wait for 0 after a replay) and ``stale_worker``
    (whether this worker process runs the rescoring thread). Readiness does not depend on them."""
    st = state_of(request)
    try:
        st.store.ping()
        stale = dict(stale_status(st))
    except Exception as exc:  # any failure of the database is "not ready", with its reason
        return error_response(503, f"event store unreachable: {exc}", "event_store")
    return JSONResponse(
        {
            "status": "ready",
            "model_version": st.scorer.version,
            "model_uri": st.scorer.source,
            "schema_hash": st.scorer.schema_hash,
            "event_store": st.store.engine.url.render_as_string(hide_password=True),
            "auth": {"api_keys": len(st.api_keys), "segment_write_keys": len(st.segment_keys),
                     "hubspot_secret": st.hubspot_secret is not None},
            **stale,
        }
    )

