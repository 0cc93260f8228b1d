"""Regression tests for the defects an outside probe found (issue 11, "Why"), in process.

Each test names the defect it pins: a whole batch lost for one bad timestamp, 500s for out-of-range
dates, huge or boolean numbers, giant integers, deep JSON, lone surrogates and HubSpot times; no body
limit and body-before-auth on ``/score``; unauthenticated requests answered 400/413/415 before 401;
unvalidated ids; ``{"detail"}`` error bodies; an undocumented OpenAPI and docs open without a key.
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from leadscore.config import Settings
from leadscore.serving.app import create_app
from leadscore.serving.gate import OpsGate
from leadscore.serving.state import ServingState
from leadscore.serving.wire import hubspot_signature
from tests.api_support import AUTH, HUBSPOT_SECRET, SEGMENT_KEY, make_state
from tests.conftest import SmallModel

GOOD_AT = "2026-10-01T10:00:00Z"
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def bundle_dir(small_model: SmallModel) -> Path:
    """The session's small bundle trained by the real pipeline (a real model, not a good one)."""
    return small_model.bundle_dir


@pytest.fixture()
def state(bundle_dir: Path, settings: Settings, tmp_path: Path) -> Iterator[ServingState]:
    st = make_state(settings, bundle_dir, tmp_path / "events.db", hubspot=True, segment=True)
    yield st
    st.store.close()


@pytest.fixture()
def client(state: ServingState) -> Iterator[TestClient]:
    with TestClient(create_app(state), raise_server_exceptions=False) as c:
        yield c


def _act(aid: str, who: str, at: str = GOOD_AT, **extra: Any) -> dict[str, Any]:
    return {"activity_id": aid, "lead_id": who, "occurred_at": at, "type": "pricing_page_view", **extra}


def _raw(client: TestClient, path: str, body: str | bytes, headers: dict[str, str] | None = None) -> Any:
    return client.post(path, content=body if isinstance(body, bytes) else body.encode(),
                       headers={**JSON, **(AUTH if headers is None else headers)})


def _with_literal(value: Any, literal: str) -> str:
    """JSON of ``value`` with the string ``"@"`` replaced by a raw JSON token (``NaN``, a 5,000-digit int)."""
    return json.dumps(value).replace('"@"', literal)


def _assert_error(r: Any, status: int, field: str | None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) >= {"error", "field", "code", "message"} and "detail" not in body, body
    assert body["field"] == field, body
    return body


# ---------------------------------------------------------------------- item-level isolation, timestamps


@pytest.mark.parametrize("bad_at", ["2999-01-01T00:00:00Z", "1500-06-01T00:00:00Z", "9999-12-31T23:59:59-14:00"])
def test_one_out_of_range_time_does_not_sink_the_batch(client: TestClient, state: ServingState, bad_at: str) -> None:
    """Was: 500 and nothing stored (pandas' nanosecond range), so SDKs retried and dropped the batch."""
    batch = {"activities": [_act("ok-1", "iso"), _act("bad-1", "iso", bad_at), _act("ok-2", "iso", "2026-10-01T11:00:00Z")]}
    r = client.post("/activities", json=batch, headers=AUTH)
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["stored"], out["rejected"]) == (2, 1)
    assert [(e["index"], e["field"]) for e in out["errors"]] == [(1, "activities[1].occurred_at")]
    assert state.store.count_activities("iso") == 2


def test_the_time_window_is_configurable_and_holds_every_timestamp_field(client: TestClient, state: ServingState) -> None:
    tomorrow_plus = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3 * 86400))
    cases = [
        (_act("w-1", "win", tomorrow_plus), "occurred_at"),  # beyond now + 1 day
        (_act("w-2", "win", "1969-12-31T23:59:59Z"), "occurred_at"),  # before 1970
        (_act("w-3", "win", lead={"created_at": "2999-01-01T00:00:00Z"}), "lead.created_at"),
        (_act("w-4", "win", account={"account_id": "acc", "created_at": "1500-01-01T00:00:00Z"}), "account.created_at"),
    ]
    for payload, field in cases:
        _assert_error(client.post("/activities", json=payload, headers=AUTH), 422, field)
    score = {"lead": {"lead_id": "w"}, "as_of": "2999-01-01T00:00:00Z"}
    _assert_error(client.post("/score", json=score, headers=AUTH), 422, "as_of")
    score = {"lead": {"lead_id": "w"}, "activities": [{"occurred_at": "1500-01-01T00:00:00Z", "type": "page_view"}]}
    _assert_error(client.post("/score", json=score, headers=AUTH), 422, "activities.0.occurred_at")
    # the window is config: a wider one accepts what the default refuses
    wide = state.settings.with_overrides(["serving.time_window.future_days=3650"])
    other = ServingState(settings=wide, scorer=state.scorer, store=state.store, api_keys=state.api_keys,
                         segment_keys=[], hubspot_secret=None)
    with TestClient(create_app(other)) as c:
        assert c.post("/activities", json=_act("w-5", "win", tomorrow_plus), headers=AUTH).status_code == 200


def test_segment_times_and_traits_are_held_to_the_window(client: TestClient, state: ServingState) -> None:
    batch = {"batch": [
        {"type": "track", "userId": "seg-w", "event": "Demo Requested", "messageId": "m1", "timestamp": "2999-01-01T00:00:00Z"},
        {"type": "identify", "userId": "seg-w", "traits": {"createdAt": "1500-01-01T00:00:00Z"}, "timestamp": GOOD_AT},
        {"type": "identify", "userId": "seg-w", "traits": {"company": {"id": "c1", "employees": True}}, "timestamp": GOOD_AT},
        {"type": "track", "userId": "seg-w", "event": "Demo Requested", "messageId": "m2", "timestamp": GOOD_AT},
    ]}
    out = client.post("/v1/batch", json=batch, headers=AUTH).json()
    assert [e["field"] for e in out["errors"]] == ["batch[0].timestamp", "batch[1].traits.created_at",
                                                   "batch[2].traits.employees"], out
    assert out["stored"] == 1 and state.store.count_activities("seg-w") == 1


# ---------------------------------------------------------------------- numbers, JSON, text


@pytest.mark.parametrize(
    ("account", "field"),
    [({"employees": 2**63}, "account.employees"), ({"employees": 10**30}, "account.employees"),
     ({"employees": True}, "account.employees"), ({"annual_revenue": True}, "account.annual_revenue")],
)
def test_numbers_are_bounded_and_never_booleans(client: TestClient, account: dict[str, Any], field: str) -> None:
    """Was: 500 for employees above 2^63 (SQLite overflow); ``true`` stored as 1."""
    r = client.post("/activities", json=_act("n-1", "num", account={"account_id": "acc-n", **account}), headers=AUTH)
    _assert_error(r, 422, field)


@pytest.mark.parametrize("literal", ["Infinity", "-Infinity", "NaN", "1e400"])
def test_non_finite_revenue_is_refused(client: TestClient, literal: str) -> None:
    """Was: ``Infinity`` revenue stored (Python's JSON parser accepts the literal)."""
    body = _with_literal(_act("inf-1", "inf", account={"account_id": "acc-inf", "annual_revenue": "@"}), literal)
    _assert_error(_raw(client, "/activities", body), 422, "account.annual_revenue")


@pytest.mark.parametrize("path", ["/activities", "/score", "/v1/batch"])
def test_giant_integers_and_deep_json_are_400_not_500(client: TestClient, path: str) -> None:
    """Was: 500 for integers of more than 4,300 digits and JSON nested deeper than ~1,000 levels."""
    giant = _with_literal(_act("g", "g", properties={"n": "@"}), "9" * 5000)
    _assert_error(_raw(client, path, giant), 400, "body")
    for depth in (100, 5000, 100_000):
        deep = '{"activities": ' + "[" * depth + "]" * depth + "}"
        _assert_error(_raw(client, path, deep), 400, "body")


def test_a_lone_surrogate_is_refused_naming_the_field(client: TestClient, state: ServingState) -> None:
    """Was: 500 (no UTF-8 encoding exists for it)."""
    body = json.dumps(_act("s-1", "x\ud800y"))  # ensure_ascii: the escape a client sends
    _assert_error(_raw(client, "/activities", body), 422, "lead_id")
    body = json.dumps(_act("s-2", "sur", lead={"job_title": "CTO \udc00"}))
    _assert_error(_raw(client, "/activities", body), 422, "lead.job_title")
    ok = json.dumps(_act("s-3", "sur", properties={"k\ud800": "v\udfff"}))  # free-form JSON keeps it, escaped
    assert _raw(client, "/activities", ok).status_code == 200


# ---------------------------------------------------------------------- ids


@pytest.mark.parametrize("bad", ["a/b", "x" * 10_000, "tab\there", " "])
def test_one_id_rule_on_every_path(client: TestClient, state: ServingState, bad: str) -> None:
    """Was: ids unvalidated on identify and HubSpot (10,000 characters stored); ``a/b`` stored, unreadable."""
    _assert_error(client.post("/activities", json=_act("id-1", bad), headers=AUTH), 422, "lead_id")
    now = int(time.time() * 1000)
    batch = {"batch": [{"type": "identify", "userId": bad, "traits": {"title": "CTO"}, "timestamp": GOOD_AT},
                       {"type": "identify", "userId": "fine-id", "traits": {"title": "CTO"}, "timestamp": GOOD_AT}]}
    out = client.post("/v1/batch", json=batch, headers=AUTH).json()
    assert (out["leads_updated"], [e["field"] for e in out["errors"]]) == (1, ["batch[0].userId"])
    r = _hubspot(client, [{"subscriptionType": "contact.creation", "objectId": bad, "occurredAt": now},
                          {"subscriptionType": "contact.creation", "objectId": "hs-fine", "occurredAt": now}])
    assert r.status_code == 200 and [e["field"] for e in r.json()["errors"]] == ["[0].objectId"], r.text
    with state.store.read() as conn:
        assert not state.store.lead_exists(conn, bad) and state.store.lead_exists(conn, "hs-fine")


def test_every_stored_lead_id_reads_back(client: TestClient) -> None:
    odd = "lead ü?#%&+=@:;,"  # everything the rule allows that URLs must escape
    assert client.post("/activities", json=_act("rb-1", odd), headers=AUTH).status_code == 200
    from urllib.parse import quote

    assert client.get(f"/leads/{quote(odd, safe='')}", headers=AUTH).json()["lead_id"] == odd
    assert client.get("/leads/a%2Fb", headers=AUTH).status_code == 404  # '/' is never an id


# ---------------------------------------------------------------------- HubSpot times


def _hubspot(client: TestClient, events: Any, sign: bool = True, body: bytes | None = None) -> Any:
    raw = body if body is not None else json.dumps(events).encode()
    ts = str(int(time.time() * 1000))
    headers = {**JSON, "X-HubSpot-Request-Timestamp": ts}
    if sign:
        headers["X-HubSpot-Signature-v3"] = hubspot_signature(HUBSPOT_SECRET, "POST", "http://testserver/webhooks/hubspot",
                                                              raw, ts)
    return client.post("/webhooks/hubspot", content=raw, headers=headers)


@pytest.mark.parametrize("occurred", ["1e20", "NaN", "Infinity", "-1e30", '"99999999999999999999999"', "32503680000000"])
def test_hubspot_impossible_times_are_reported_by_index(client: TestClient, occurred: str) -> None:
    """Was: 500 for ``occurredAt`` of 1e20 or NaN."""
    now = int(time.time() * 1000)
    raw = _with_literal([{"subscriptionType": "contact.creation", "objectId": 1, "occurredAt": "@"},
                         {"subscriptionType": "contact.creation", "objectId": 2, "occurredAt": now}], occurred).encode()
    r = _hubspot(client, None, body=raw)
    assert r.status_code == 200, r.text
    assert (r.json()["processed"], [e["field"] for e in r.json()["errors"]]) == (1, ["[0].occurredAt"])


# ---------------------------------------------------------------------- auth before body, limits


def test_score_has_a_body_limit_and_checks_the_key_first(client: TestClient, state: ServingState) -> None:
    """Was: a 42 MB body read and scored; the body read before the key was checked."""
    limit = state.settings.serving.max_batch_bytes
    huge = b'{"lead": {"lead_id": "x"}, "pad": "' + b"x" * (limit + 10) + b'"}'
    _assert_error(_raw(client, "/score", huge), 413, "body")
    _assert_error(_raw(client, "/score", huge, headers={}), 401, "Authorization")
    _assert_error(_raw(client, "/score", b"{oops", headers={}), 401, "Authorization")


def test_wire_routes_answer_401_before_looking_at_the_body(client: TestClient) -> None:
    """Was: 400/413/415 to unauthenticated requests on /v1/batch and /webhooks/hubspot."""
    for headers in ({**JSON}, {**JSON, "Content-Encoding": "br"}, {**JSON, "Content-Encoding": "gzip"}):
        for body in (b"{oops", b'{"batch": 5}', gzip.compress(b"[[[")):
            r = client.post("/v1/batch", content=body, headers=headers)
            _assert_error(r, 401, "Authorization")
    _assert_error(_hubspot(client, None, sign=False, body=b"{oops"), 401, "X-HubSpot-Signature-v3")
    r = client.post("/webhooks/hubspot", content=b"x" * 2_000_000, headers=JSON)
    assert r.status_code == 401
    # the write key in the body still works, once the body is within its limit
    ok = client.post("/v1/batch", json={"writeKey": SEGMENT_KEY, "batch": []}, headers=JSON)
    assert ok.status_code == 200, ok.text


# ---------------------------------------------------------------------- one error shape


def test_one_error_shape_everywhere(client: TestClient) -> None:
    """Was: ``/score`` errors as ``{"detail": ...}``; malformed JSON named a character offset as the field."""
    _assert_error(_raw(client, "/score", b'{"lead": {"lead_id": "x"},,}'), 400, "body")
    _assert_error(client.post("/score", json={"lead": {}}, headers=AUTH), 422, "lead.lead_id")
    _assert_error(client.post("/score", json={"lead": {"lead_id": "x"}, "bogus": 1}, headers=AUTH), 422, "bogus")
    _assert_error(client.get("/leads/x?limit=0", headers=AUTH), 422, "limit")
    _assert_error(client.get("/leads/x?limit=" + "9" * 5000, headers=AUTH), 422, "limit")
    _assert_error(client.get("/nowhere", headers=AUTH), 404, None)
    _assert_error(client.delete("/activities", headers=AUTH), 405, None)


def test_the_activities_wrapper_forbids_unknown_keys(client: TestClient, state: ServingState) -> None:
    """Was: ``{"activities": [...], "extra": 1}`` accepted although the schema forbids extra keys."""
    r = client.post("/activities", json={"activities": [_act("wr-1", "wr")], "extra": 1}, headers=AUTH)
    _assert_error(r, 422, "extra")
    assert state.store.count_activities("wr") == 0
    mixed = {"activities": [_act("wr-2", "wr"), 42, None, "text", [1]]}  # items of any shape: by index
    out = client.post("/activities", json=mixed, headers=AUTH).json()
    assert (out["stored"], sorted(e["index"] for e in out["errors"])) == (1, [1, 2, 3, 4])


def test_a_bug_is_a_500_in_the_error_shape_that_closes_the_connection(client: TestClient, state: ServingState,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(state.scorer, "score", broken)
    r = client.post("/score", json={"lead": {"lead_id": "bug"}}, headers=AUTH)
    body = _assert_error(r, 500, None)
    assert body["code"] == "internal" and "boom" not in r.text
    assert r.headers["connection"] == "close"


# ---------------------------------------------------------------------- OpenAPI, what is open


def test_openapi_documents_bodies_security_and_errors(client: TestClient) -> None:
    spec = client.get("/openapi.json", headers=AUTH).json()
    assert set(spec["components"]["securitySchemes"]) == {"apiKey", "segmentWriteKey", "hubspotSignature"}
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            assert "security" in op, (path, method)
            if path not in ("/health", "/ready"):
                assert op["security"], (path, method)
                assert {"401", "422"} <= set(op["responses"]), (path, method)
                for status, resp in op["responses"].items():
                    if status != "200":
                        assert resp["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorOut"}
            if method == "post":
                assert op["requestBody"]["content"]["application/json"]["schema"], path
    batch = spec["paths"]["/v1/batch"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    hubspot = spec["paths"]["/webhooks/hubspot"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert batch == {"$ref": "#/components/schemas/SegmentBatch"}
    assert hubspot["items"] == {"$ref": "#/components/schemas/HubSpotEvent"}
    assert "max_batch_bytes" in spec["paths"]["/score"]["post"]["requestBody"]["description"]


def test_only_health_and_readiness_are_open_by_default(client: TestClient, state: ServingState) -> None:
    """Was: docs and metrics answered without a key while the README said only health and readiness are."""
    assert client.get("/health").status_code == 200 and client.get("/ready").status_code == 200
    for path in ("/openapi.json", "/api-docs"):
        _assert_error(client.get(path), 401, "Authorization")
        assert client.get(path, headers=AUTH).status_code == 200
    opened = ServingState(settings=state.settings.with_overrides(["serving.open_docs=true"]), scorer=state.scorer,
                          store=state.store, api_keys=state.api_keys, segment_keys=[], hubspot_secret=None)
    with TestClient(create_app(opened)) as c:
        assert c.get("/openapi.json").status_code == 200


def test_the_ops_gate_guards_bentoml_metrics_and_docs(state: ServingState) -> None:
    """BentoML serves /metrics and /docs.json beside our app; the gate puts them behind the key."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    inner = Starlette(routes=[Route(p, lambda _: PlainTextResponse("ok")) for p in ("/metrics", "/docs.json", "/livez")])
    current: list[ServingState | None] = [None]
    with TestClient(OpsGate(inner, state=lambda: current[0])) as c:
        assert c.get("/metrics").status_code == 503  # no state yet: starting
        assert c.get("/livez").status_code == 200
        current[0] = state
        assert c.get("/metrics").status_code == 401 and c.get("/docs.json").status_code == 401
        assert c.get("/metrics", headers=AUTH).status_code == 200
        current[0] = ServingState(settings=state.settings.with_overrides(["serving.open_metrics=true"]),
                                  scorer=state.scorer, store=state.store, api_keys=state.api_keys,
                                  segment_keys=[], hubspot_secret=None)
        assert c.get("/metrics").status_code == 200 and c.get("/docs.json").status_code == 401


def test_sales_touches_are_stored_sales_side_and_never_move_the_leads_interest(
        client: TestClient, state: ServingState) -> None:
    """A ``sales_call`` posted by the CRM used to be stored as ``other`` and counted as the lead's
    interest; it is a known type, stored with ``actor = sales``, and the lead's score does not move.
    An actor outside the vocabulary is refused by index, naming the field."""
    first = client.post("/activities", json={"activities": [_act("s-1", "L-sales")]}, headers=AUTH).json()
    touch = {"activity_id": "s-2", "lead_id": "L-sales", "occurred_at": GOOD_AT, "type": "sales_call"}
    out = client.post("/activities", json={"activities": [touch, {**_act("s-3", "L-sales"), "actor": "bot"}]},
                      headers=AUTH).json()
    assert [(e["index"], e["field"]) for e in out["errors"]] == [(1, "activities[1].actor")]
    with state.store.read() as conn:
        rows = conn.exec_driver_sql("SELECT type, actor FROM activities WHERE activity_id = 's-2'").all()
    assert rows == [("sales_call", "sales")]
    before, after = first["scores"][0], out["scores"][0]
    assert (after["p_sql"], after["p_opportunity"]) == (before["p_sql"], before["p_opportunity"])
