"""The published API description: security schemes, hand-validated request bodies, who may read it.

Routes that validate item by item read their bodies by hand, so FastAPI cannot infer those request
schemas; they are declared with :func:`~leadscore.serving.http.openapi_body` and their models are
added here. Every operation states the credentials it takes (``security``) and the one error body.

What is open without a key: ``/health`` and ``/ready`` (probes carry no key). The description
(``/openapi.json``, ``/api-docs``) needs an API key unless ``serving.open_docs`` is true.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse

from leadscore.serving.http import require_api_key, state_of
from leadscore.serving.schemas import ActivityBatch, ActivityIn, HubSpotEvent, SegmentBatch

SECURITY_SCHEMES: dict[str, Any] = {
    "apiKey": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <API key>."},
    "segmentWriteKey": {"type": "http", "scheme": "basic",
                        "description": "A Segment/RudderStack write key as the HTTP basic user name "
                                       "(or as ``writeKey`` in the body)."},
    "hubspotSignature": {"type": "apiKey", "in": "header", "name": "X-HubSpot-Signature-v3",
                         "description": "HubSpot v3 signature over method, URI, body and "
                                        "X-HubSpot-Request-Timestamp (at most 5 minutes old)."},
}
#: credentials per path; a path not listed takes an API key, ``[]`` is open
SECURITY: dict[str, list[dict[str, list[str]]]] = {
    "/health": [],
    "/ready": [],
    "/v1/batch": [{"segmentWriteKey": []}, {"apiKey": []}],
    "/webhooks/hubspot": [{"hubspotSignature": []}],
}
DOC_MODELS = (ActivityIn, ActivityBatch, SegmentBatch, HubSpotEvent)


def build_openapi(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document of ``app`` (built once, then cached on the app)."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema.setdefault("components", {})
    comps = components.setdefault("schemas", {})
    for model in DOC_MODELS:
        js = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in js.pop("$defs", {}).items():
            comps.setdefault(name, sub)
        comps[model.__name__] = js
    # validated one by one (any shape is reported by index), documented as what a valid item is
    comps["ActivityBatch"]["properties"]["activities"]["items"] = {"$ref": "#/components/schemas/ActivityIn"}
    components["securitySchemes"] = SECURITY_SCHEMES
    for path, operations in schema.get("paths", {}).items():
        for op in operations.values():
            op["security"] = SECURITY.get(path, [{"apiKey": []}])
    app.openapi_schema = schema
    return schema


def install_docs(app: FastAPI) -> None:
    """``/openapi.json`` and ``/api-docs``, behind the API key unless ``serving.open_docs``."""
    app.openapi = lambda: build_openapi(app)  # type: ignore[method-assign]

    def guard(request: Request) -> None:
        st = state_of(request)
        if not st.settings.serving.open_docs:
            require_api_key(request, st)

    async def openapi_json(request: Request) -> JSONResponse:
        guard(request)
        return JSONResponse(build_openapi(app))

    async def api_docs(request: Request) -> HTMLResponse:
        guard(request)
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} API")

    app.get("/openapi.json", include_in_schema=False)(openapi_json)
    app.get("/api-docs", include_in_schema=False)(api_docs)
