"""The HTTP plumbing every route shares: error bodies, body limits, JSON parsing, authentication.

Errors are ``{error, field, code, message}`` JSON with a 4xx status naming the bad field (never a
5xx for bad input); :class:`~leadscore.serving.wire.WireError` carries status, field and message
from wherever the problem is found to :func:`install_error_handlers`.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from leadscore.serving.schemas import BadItem, ErrorOut
from leadscore.serving.state import ServingState
from leadscore.serving.wire import WireError, bearer_key, key_matches

#: the error answers every authenticated route documents in the OpenAPI spec
ERRORS: dict[int | str, dict[str, Any]] = {s: {"model": ErrorOut} for s in (400, 401, 413, 422, 503)}


def error_response(status: int, message: str, field: str | None = None, errors: list[BadItem] | None = None,
                   code: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": message, "field": field}
    if errors is not None:
        body["errors"] = [e.model_dump() for e in errors]
    # Segment/RudderStack SDKs read "code" and "message" from error bodies.
    body["code"] = code or {401: "unauthorized", 413: "payload_too_large", 503: "unavailable"}.get(status, "invalid")
    body["message"] = message if field is None else f"{field}: {message}"
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Turn :class:`WireError` and FastAPI's own validation errors into our 4xx error body."""

    async def wire_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, WireError)
        return error_response(exc.status, exc.message, exc.field)

    async def validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errs = exc.errors()
        first = errs[0] if errs else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "path", "query")]
        return error_response(422, str(first.get("msg")), ".".join(loc) or "body")

    app.add_exception_handler(WireError, wire_error)
    app.add_exception_handler(RequestValidationError, validation_error)


def state_of(request: Request) -> ServingState:
    """The :class:`ServingState` that :func:`~leadscore.serving.app.create_app` bound to this app."""
    st = request.app.state.leadscore
    assert isinstance(st, ServingState)
    return st


def require_api_key(request: Request, st: ServingState) -> None:
    if not key_matches(bearer_key(request.headers.get("authorization")), st.api_keys):
        raise WireError(401, "missing or invalid API key (Authorization: Bearer <key>)", "Authorization")


def authorized(request: Request) -> ServingState:
    """Dependency form of the API-key check: FastAPI runs it before validating the body, so an
    unauthenticated caller learns nothing about the request schema (401, not 422)."""
    st = state_of(request)
    require_api_key(request, st)
    return st


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


def item_size(item: Any) -> int:
    return len(json.dumps(item, separators=(",", ":"), default=str).encode())


def openapi_body(model: type[Any], alternatives: list[type[Any]] | None = None) -> dict[str, Any]:
    """OpenAPI request body for routes that read the raw body themselves (to validate per item)."""
    names = [model.__name__, *[m.__name__ for m in alternatives or []]]
    refs = [{"$ref": f"#/components/schemas/{n}"} for n in names]
    schema = refs[0] if len(refs) == 1 else {"oneOf": refs}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


async def run_blocking(fn: Any, *args: Any) -> Any:
    """Blocking work (SQL, pandas, LightGBM) off the event loop."""
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn, *args)
