"""The HTTP plumbing every route shares: error bodies, body limits, JSON parsing, authentication.

Errors are ``{error, field, code, message}`` JSON with a 4xx status naming the bad field (never a
5xx for bad input); :class:`~leadscore.serving.wire.WireError` carries status, field and message
from wherever the problem is found to :func:`install_error_handlers`, which also gives FastAPI's and
Starlette's own errors (404, 405, query validation) that shape. A 5xx that still happens (a bug) has
the same shape and ``Connection: close``, so a keep-alive client does not reuse a connection the
server is about to drop.

Order on every route: credentials first (headers only), then the size limit while the body is
read, then parsing and validation. So an unauthenticated caller gets 401 whatever it sends
(nothing about the request schema leaks), and no body is read past its limit.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from leadscore.serving.schemas import BadItem, ErrorOut
from leadscore.serving.state import ServingState
from leadscore.serving.wire import WireError, bearer_key, key_matches

_CODES = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large",
          415: "unsupported_media_type", 500: "internal", 503: "unavailable"}

#: the error answers every authenticated route documents in the OpenAPI spec
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "Body is not JSON, is nested too deeply, or has the wrong top-level shape."},
    401: {"model": ErrorOut, "description": "Missing or invalid credentials (checked before the body is read)."},
    413: {"model": ErrorOut, "description": "Body (or one event of a batch, or the inflated gzip body) over its limit."},
    422: {"model": ErrorOut, "description": "A field is invalid; ``field`` names it, ``errors`` lists each bad item."},
    503: {"model": ErrorOut, "description": "The service is starting or the event store is unreachable."},
}
#: routes that accept gzip/deflate request bodies also document 415
ERRORS_ENCODED: dict[int | str, dict[str, Any]] = {
    **ERRORS, 415: {"model": ErrorOut, "description": "Unsupported Content-Encoding."}}


class SafeJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped: an error message quoting a lone surrogate still encodes."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode()


def error_response(status: int, message: str, field: str | None = None, errors: list[BadItem] | None = None,
                   code: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": message, "field": field}
    if errors is not None:
        body["errors"] = [e.model_dump() for e in errors]
    # Segment/RudderStack SDKs read "code" and "message" from error bodies.
    body["code"] = code or _CODES.get(status, "invalid")
    body["message"] = message if field is None else f"{field}: {message}"
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    if status >= 500 and status != 503:
        headers["Connection"] = "close"
    return SafeJSONResponse(body, status_code=status, headers=headers or None)


def install_error_handlers(app: FastAPI) -> None:
    """Turn :class:`WireError`, FastAPI's and Starlette's errors and any bug into our error body."""

    async def wire_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, WireError)
        return error_response(exc.status, exc.message, exc.field)

    async def validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errs = exc.errors()
        first = errs[0] if errs else {"loc": (), "msg": "invalid request"}
        if first.get("type") == "json_invalid":  # its loc is a character offset, not a field
            return error_response(400, "body is not valid JSON", "body")
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "path", "query", "header")]
        return error_response(422, str(first.get("msg")), ".".join(loc) or "body")

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return error_response(exc.status_code, str(exc.detail), None)

    async def bug(_: Request, exc: Exception) -> JSONResponse:
        return error_response(500, f"internal error ({type(exc).__name__}); the request can be retried", None)

    app.add_exception_handler(WireError, wire_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, bug)


def state_of(request: Request) -> ServingState:
    """The :class:`ServingState` that :func:`~leadscore.serving.app.create_app` bound to this app."""
    st = request.app.state.leadscore
    assert isinstance(st, ServingState)
    return st


def require_api_key(request: Request, st: ServingState) -> None:
    if not key_matches(bearer_key(request.headers.get("authorization")), st.api_keys):
        raise WireError(401, "missing or invalid API key (Authorization: Bearer <key>)", "Authorization")


async def authorized(request: Request) -> ServingState:
    """Dependency form of the API-key check: FastAPI runs it before validating the body, so an
    unauthenticated caller learns nothing about the request schema (401, not 422).

    ``async`` although it awaits nothing: FastAPI runs a plain ``def`` dependency in the thread pool,
    one more hand-over per request (and a wait for a free thread under load) for a header check."""
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


def parse_json(raw: bytes, max_depth: int) -> Any:
    """The JSON value of ``raw``, or a 400 naming ``body``.

    Refused too: integers of more than 4,300 digits (Python's int conversion limit), nesting deeper
    than ``max_depth`` (the parser's own recursion limit is ~1,000 levels and ends in RecursionError),
    which would otherwise surface later as 500s.
    """
    if not raw.strip():
        raise WireError(400, "empty body: expected JSON", "body")
    try:
        value = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise WireError(400, "body is not valid JSON", "body") from None
    except RecursionError:
        raise WireError(400, f"JSON nested deeper than {max_depth} levels", "body") from None
    except ValueError as exc:  # "Exceeds the limit (4300 digits) for integer string conversion"
        raise WireError(400, f"body is not acceptable JSON: {exc}", "body") from None
    if _depth_exceeds(value, max_depth):
        raise WireError(400, f"JSON nested deeper than {max_depth} levels", "body")
    return value


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Whether ``value`` nests objects/arrays more than ``limit`` deep (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def item_size(item: Any) -> int:
    return len(json.dumps(item, separators=(",", ":"), default=str).encode())


def openapi_body(model: type[Any], alternatives: list[type[Any]] | None = None, *, array: bool = False,
                 limit: str = "") -> dict[str, Any]:
    """OpenAPI request body for routes that read the raw body themselves (to validate per item)."""
    names = [model.__name__, *[m.__name__ for m in alternatives or []]]
    refs = [{"$ref": f"#/components/schemas/{n}"} for n in names]
    schema: dict[str, Any] = refs[0] if len(refs) == 1 else {"oneOf": refs}
    if array:
        schema = {"type": "array", "items": schema}
    body: dict[str, Any] = {"required": True, "content": {"application/json": {"schema": schema}}}
    if limit:
        body["description"] = limit
    return {"requestBody": body}


async def run_blocking(fn: Any, *args: Any) -> Any:
    """Blocking work (SQL, pandas, LightGBM) off the event loop."""
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn, *args)

