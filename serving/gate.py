"""The gate in front of BentoML's own routes (``/metrics``, ``/docs.json``, its index page).

BentoML serves those beside the app :func:`~leadscore.serving.app.create_app` builds, so the app
cannot guard them; the service wraps the whole server in :class:`OpsGate`. Kept free of heavy
imports (the service module adds it when the class is defined, before any model is loaded).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from leadscore.serving.wire import bearer_key, key_matches

if TYPE_CHECKING:
    from leadscore.serving.state import ServingState


class OpsGate:
    """ASGI middleware for BentoML's own routes: ``/metrics`` and the API description pages need an
    API key unless ``serving.open_metrics`` / ``serving.open_docs`` open them.

    BentoML serves those beside our app, so :func:`create_app` cannot guard them; the service adds
    this around the whole server (``LeadScoreService.add_asgi_middleware(OpsGate, state=...)``).
    ``/livez`` ``/readyz`` (and our ``/health`` ``/ready``) stay open: probes carry no key.
    """

    DOCS = ("/docs.json", "/static_content", "/api-docs", "/openapi.json", "/redoc")

    def __init__(self, app: Any, state: Callable[[], ServingState | None]) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        metrics = path == "/metrics"
        docs = path.startswith(self.DOCS) or path == "/"
        if metrics or docs:
            st = self.state()
            cfg = st.settings.serving if st is not None else None
            opened = cfg is not None and (cfg.open_metrics if metrics else cfg.open_docs)
            headers = dict(scope.get("headers") or [])
            key = bearer_key(headers.get(b"authorization", b"").decode("latin-1"))
            if not opened and (st is None or not key_matches(key, st.api_keys)):
                from leadscore.serving.http import error_response

                response = (error_response(503, "the service is starting") if st is None else
                            error_response(401, "missing or invalid API key (Authorization: Bearer <key>)",
                                           "Authorization"))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
