"""Schemathesis over every operation of the published OpenAPI document, in process.

Cases come from the document itself (positive: what it allows; negative: what it forbids), are sent
to ``create_app(state)`` through its ASGI interface with a valid key, and every answer is checked:
never a 5xx, status codes and content types the document lists, bodies valid against the documented
response schema. HubSpot requests are signed by a thin ASGI wrapper (the route verifies the v3
signature before reading events, so unsigned cases would only ever exercise the 401).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from leadscore.config import Settings
from leadscore.serving.app import create_app
from leadscore.serving.state import ServingState
from leadscore.serving.wire import hubspot_signature
from tests.api_support import AUTH, HUBSPOT_SECRET, make_state
from tests.conftest import SmallModel

#: examples per operation and generation mode: 5 operations with inputs x 2 modes x 110 > 1,000 cases
EXAMPLES = 110
MIN_CASES = 1000
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


class SignHubSpot:
    """ASGI wrapper that signs HubSpot webhook requests as HubSpot would (v3, timestamp now)."""

    def __init__(self, app: Any, secret: str) -> None:
        self.app, self.secret = app, secret

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/webhooks/hubspot":
            await self.app(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = dict(scope["headers"])
        host = headers.get(b"host", b"testserver").decode()
        query = scope.get("query_string", b"").decode()
        uri = f"{scope['scheme']}://{host}{scope['path']}" + (f"?{query}" if query else "")
        ts = str(int(time.time() * 1000))
        sig = hubspot_signature(self.secret, scope["method"], uri, body, ts)
        extra = [(b"x-hubspot-request-timestamp", ts.encode()), (b"x-hubspot-signature-v3", sig.encode())]
        scope = {**scope, "headers": [*scope["headers"], *extra]}
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


@pytest.fixture(scope="module")
def fuzz_state(tmp_path_factory: pytest.TempPathFactory, settings: Settings,
               small_model: SmallModel) -> Iterator[ServingState]:
    bundle = small_model.bundle_dir
    db: Path = tmp_path_factory.mktemp("fuzz") / "events.db"
    st = make_state(settings, bundle, db, hubspot=True)
    yield st
    st.store.close()


def _fuzz(operation: Any, mode: schemathesis.GenerationMode, cases: Counter[str],
          failures: dict[str, list[str]]) -> None:
    """Run ``EXAMPLES`` cases of one operation in one mode, recording every failure (not only the first)."""

    @given(case=operation.as_strategy(mode))
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def run(case: schemathesis.Case) -> None:
        cases[operation.label] += 1
        try:
            response = case.call(headers=AUTH)
        except Exception as exc:  # the in-process client re-raises what the app did not handle
            failures.setdefault(operation.label, []).append(f"{mode.value} unhandled {exc!r:.200}")
            return
        try:
            case.validate_response(response, checks=CHECKS)
        except (Exception, BaseExceptionGroup) as exc:
            titles = [getattr(e, "title", repr(e)) for e in getattr(exc, "exceptions", [exc])]
            failures.setdefault(operation.label, []).append(
                f"{mode.value} {response.status_code}: {'; '.join(titles)} {response.text[:160]}")

    try:
        run()
    except Unsatisfiable:  # nothing to negate (no parameters, no body): /health, /ready
        assert mode is schemathesis.GenerationMode.NEGATIVE, operation.label


def test_schemathesis_every_operation_no_server_error_no_schema_violation(fuzz_state: ServingState) -> None:
    app = SignHubSpot(create_app(fuzz_state), HUBSPOT_SECRET)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers=AUTH)
    operations = [op.ok() for op in schema.get_all_operations()]
    assert len(operations) >= 7, [o.label for o in operations]
    cases: Counter[str] = Counter()
    failures: dict[str, list[str]] = {}
    for operation in operations:
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            _fuzz(operation, mode, cases, failures)
    total = sum(cases.values())
    n_failed = sum(len(v) for v in failures.values())
    print(f"\nschemathesis: {total} cases over {len(operations)} operations, {n_failed} failures")
    print(f"  cases per operation: {dict(cases)}")
    for label, msgs in failures.items():
        print(f"  {label}: {len(msgs)} failures, e.g. {sorted(set(msgs))[:5]}")
    with fuzz_state.store.read() as conn:
        stored = conn.execute(sa.text("SELECT count(*) FROM activities")).scalar_one()
        leads = conn.execute(sa.text("SELECT count(*) FROM leads")).scalar_one()
    print(f"  stored by the generated cases: {stored} activities, {leads} leads")
    assert total >= MIN_CASES, cases
    assert stored > 0, "no generated activity reached the store and the model"
    assert not failures, {k: sorted(set(v))[:10] for k, v in failures.items()}
