"""The scoring service over HTTP: a real ``bentoml serve`` process, a real SQLite event store, a real model.

One server for the module (starting BentoML and warming the feature kernel costs seconds); the
restart test runs last and starts a second process on the same event store.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from leadscore.config import Settings
from leadscore.history import CRMHistory, load_history
from tests.conftest import SmallModel
from tests.test_serving_support import (
    API_KEY,
    HUBSPOT_SECRET,
    REPO_ROOT,
    WRITE_KEY,
    Server,
    server_env,
)

pytestmark = pytest.mark.server

AUTH = {"Authorization": f"Bearer {API_KEY}"}


@dataclass
class Served:
    server: Server
    client: httpx.Client
    settings: Settings
    history: CRMHistory
    bundle_dir: Path
    store_url: str
    env: dict[str, str]
    version: str


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, settings: Settings, small_model: SmallModel) -> Iterator[Served]:
    """The session's model (trained by the real pipeline, registered), aliased ``champion``, served from the
    registry."""
    from mlflow import MlflowClient

    model = small_model
    history, report = load_history(model.crm_dir, settings)
    assert report.usable
    MlflowClient().set_registered_model_alias(settings.training.registered_model_name, "champion", model.version)
    root = tmp_path_factory.mktemp("serving")
    store_url = f"sqlite:///{root / 'events.db'}"
    env = server_env(None, store_url)
    server = Server(env, root / "server.log")
    server.start()
    client = httpx.Client(base_url=server.url, timeout=60.0)
    try:
        yield Served(server, client, settings, history, model.bundle_dir, store_url, env, model.version)
    finally:
        client.close()
        server.stop()


def _bundle(served: Served) -> Any:
    """The model the server pinned, loaded independently from the registry."""
    from leadscore.training.registry import load_bundle

    return load_bundle(f"models:/{served.settings.training.registered_model_name}/{served.version}", served.settings)


def _batch_score(history: CRMHistory, lead_id: str, as_of: pd.Timestamp, settings: Settings, bundle: Any) -> tuple[dict[str, float], dict[str, list[str]]]:
    """The batch pipeline: features.compute on the whole history, then the bundle's batch predict."""
    from leadscore import features

    moments = pd.DataFrame({"lead_id": pd.Series([lead_id], dtype="str"),
                            "as_of": pd.Series([as_of]).astype("datetime64[us, UTC]")})
    frame = features.compute(history, moments, settings)
    probs = bundle.predict(frame).iloc[0]
    return {"p_sql": float(probs["p_sql"]), "p_opportunity": float(probs["p_opportunity"])}, bundle.reasons(frame.iloc[[0]])


def _activity(aid: str, who: str, at: str, typ: str = "page_view", **extra: Any) -> dict[str, Any]:
    return {"activity_id": aid, "lead_id": who, "occurred_at": at, "type": typ, **extra}


def _hist(rows_leads: list[dict[str, Any]], rows_acts: list[dict[str, Any]], cutoff: str,
          accounts: list[dict[str, Any]] | None = None) -> CRMHistory:
    from leadscore.features.testing import history

    return history(cutoff, leads=rows_leads, activities=rows_acts, accounts=accounts or [])


# ------------------------------------------------------------------------------------------ ops


def test_health_and_readiness_report_pinned_model(served: Served) -> None:
    assert served.client.get("/health").json() == {"status": "ok"}
    ready = served.client.get("/ready").json()
    assert ready["status"] == "ready"
    assert ready["model_version"] == served.version  # the alias, resolved to a pinned version
    assert ready["model_uri"] == "models:/leadscore@champion"
    from leadscore.features.schema import schema_hash

    assert ready["schema_hash"] == schema_hash(served.settings)
    assert served.client.get("/readyz").status_code == 200  # BentoML's own probe


def test_openapi_is_published(served: Served) -> None:
    assert served.client.get("/openapi.json").status_code == 401  # serving.open_docs is false by default
    spec = served.client.get("/openapi.json", headers=AUTH).json()
    # BentoML's own pages sit behind the same key (serving/gate.py)
    for path in ("/metrics", "/docs.json"):
        assert served.client.get(path).status_code == 401, path
    assert served.client.get("/metrics", headers=AUTH).status_code == 200
    assert served.client.get("/livez").status_code == 200
    for path in ("/activities", "/score", "/leads/{lead_id}", "/v1/batch", "/webhooks/hubspot", "/health", "/ready"):
        assert path in spec["paths"], path
    assert "ActivityIn" in spec["components"]["schemas"]
    assert "ScoreOut" in spec["components"]["schemas"]


def test_every_endpoint_but_health_needs_credentials(served: Served) -> None:
    c = served.client
    act = _activity("auth-1", "auth-lead", "2026-10-01T10:00:00Z")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic " + base64.b64encode(b"x:").decode()}):
        assert c.post("/activities", json=act, headers=headers).status_code == 401
        assert c.post("/score", json={"lead": {"lead_id": "x"}}, headers=headers).status_code == 401
        assert c.post("/score", json={"lead": {"nope": 1}}, headers=headers).status_code == 401
        assert c.get("/leads/auth-lead", headers=headers).status_code == 401
        assert c.post("/v1/batch", json={"batch": []}, headers=headers).status_code == 401
    r = c.post("/activities", json=act)
    assert r.json()["field"] == "Authorization"
    # nothing was stored by the refused calls
    assert c.get("/leads/auth-lead", headers=AUTH).status_code == 404


# ------------------------------------------------------------------------------------------ scoring


def test_activity_is_scored_with_calibrated_probabilities_stage_and_reasons(served: Served) -> None:
    r = served.client.post(
        "/activities",
        json=_activity("s-1", "score-lead", "2026-10-02T09:00:00Z", "demo_request",
                       lead={"job_title": "VP Marketing", "source": "organic_search", "country": "DE"},
                       account={"account_id": "score-acc", "name": "Acme", "industry": "software", "employees": 300}),
        headers=AUTH,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["stored"] == 1 and body["duplicates"] == 0 and body["errors"] == []
    (score,) = body["scores"]
    assert score["lead_id"] == "score-lead"
    assert score["scored_at"].startswith("2026-10-02T09:00:00")
    assert 0.0 <= score["p_sql"] <= 1.0 and 0.0 <= score["p_opportunity"] <= 1.0
    assert score["stage"] in ("lead", "mql", "sql")
    assert score["previous_stage"] is None
    assert len(score["reasons"]["positive"]) <= 3 and len(score["reasons"]["negative"]) <= 3
    assert score["reasons"]["positive"] or score["reasons"]["negative"]
    assert score["model_version"] == served.client.get("/ready").json()["model_version"]


def test_same_activity_twice_counts_once(served: Served) -> None:
    c = served.client
    act = _activity("idem-1", "idem-lead", "2026-10-03T12:00:00Z", "pricing_page_view")
    first = c.post("/activities", json=act, headers=AUTH).json()
    again = c.post("/activities", json=act, headers=AUTH).json()
    assert (first["stored"], first["duplicates"]) == (1, 0)
    assert (again["stored"], again["duplicates"]) == (0, 1)
    assert again["scores"][0]["p_sql"] == first["scores"][0]["p_sql"]
    assert again["scores"][0]["previous_stage"] == first["scores"][0]["previous_stage"]
    lead = c.get("/leads/idem-lead", headers=AUTH).json()
    assert lead["activities"] == 1
    assert len(lead["history"]) == 1  # a retry is answered, not audited twice
    # the same id inside one batch is stored once, too
    batch = {"activities": [_activity("idem-2", "idem-lead", "2026-10-03T13:00:00Z")] * 3}
    out = c.post("/activities", json=batch, headers=AUTH).json()
    assert (out["stored"], out["duplicates"]) == (1, 2)
    assert c.get("/leads/idem-lead", headers=AUTH).json()["activities"] == 2


def test_out_of_order_activities_are_scored_at_their_own_time(served: Served) -> None:
    c = served.client
    lead = {"created_at": "2026-09-01T00:00:00Z", "source": "paid_search", "job_title": "Head of IT"}
    late = _activity("ooo-2", "ooo-lead", "2026-10-10T10:00:00Z", "demo_request", lead=lead)
    early = _activity("ooo-1", "ooo-lead", "2026-10-05T10:00:00Z", "pricing_page_view")
    s_late = c.post("/activities", json=late, headers=AUTH).json()["scores"][0]
    s_early = c.post("/activities", json=early, headers=AUTH).json()["scores"][0]
    assert s_early["scored_at"].startswith("2026-10-05T10:00:00")
    leads = [{"lead_id": "ooo-lead", "created_at": "2026-09-01", "source": "paid_search", "job_title": "Head of IT"}]
    acts = [_activity("ooo-1", "ooo-lead", "2026-10-05 10:00:00", "pricing_page_view"),
            _activity("ooo-2", "ooo-lead", "2026-10-10 10:00:00", "demo_request")]
    hist = _hist(leads, acts, "2026-10-11")
    bundle = _bundle(served)
    at_early, _ = _batch_score(hist, "ooo-lead", pd.Timestamp("2026-10-05 10:00", tz="UTC"), served.settings, bundle)
    at_late, _ = _batch_score(hist, "ooo-lead", pd.Timestamp("2026-10-10 10:00", tz="UTC"), served.settings, bundle)
    # the early score does not see the later activity (no leakage) ...
    assert s_early["p_sql"] == pytest.approx(at_early["p_sql"], abs=1e-12)
    # ... and the lead's current score is refreshed to include the late arrival
    view = c.get("/leads/ooo-lead", headers=AUTH).json()
    assert view["activities"] == 2
    assert view["latest"]["scored_at"].startswith("2026-10-10T10:00:00")
    assert view["latest"]["p_sql"] == pytest.approx(at_late["p_sql"], abs=1e-12)
    assert view["latest"]["p_opportunity"] == pytest.approx(at_late["p_opportunity"], abs=1e-12)
    assert s_late["scored_at"].startswith("2026-10-10T10:00:00")


def _account_slice(history: CRMHistory, lead_id: str) -> CRMHistory:
    """The lead, its account, the account's other leads and everything they did (what serving loads)."""
    lead = history.leads[history.leads["lead_id"] == lead_id]
    acc = lead["account_id"].iloc[0]
    leads = history.leads[history.leads["account_id"] == acc] if pd.notna(acc) else lead
    ids = set(leads["lead_id"])
    return CRMHistory(
        accounts=history.accounts[history.accounts["account_id"] == acc].reset_index(drop=True),
        leads=leads.reset_index(drop=True),
        activities=history.activities[history.activities["lead_id"].isin(ids)].reset_index(drop=True),
        stage_changes=history.stage_changes[history.stage_changes["lead_id"].isin(ids)].reset_index(drop=True),
        opportunities=history.opportunities[
            history.opportunities["lead_id"].isin(ids) | (history.opportunities["account_id"] == acc)
        ].reset_index(drop=True),
        cutoff=history.cutoff,
    )


def test_online_score_equals_batch_pipeline(served: Served) -> None:
    """Import an account's history, send one of its leads' activities over HTTP; compare with batch."""
    from leadscore.serving.store import EventStore

    h = served.history
    per_acc = h.leads.dropna(subset=["account_id"]).groupby("account_id")["lead_id"].count()
    busy = h.activities.groupby("lead_id").size()
    candidates = h.leads[h.leads["account_id"].isin(per_acc[per_acc >= 2].index)]
    candidates = candidates[candidates["lead_id"].isin(busy[busy >= 20].index)]
    lead_id = str(candidates["lead_id"].iloc[0])
    full = _account_slice(h, lead_id)
    acts = full.activities[full.activities["lead_id"] == lead_id].sort_values("occurred_at")
    target = acts.iloc[len(acts) // 2]
    t = target["occurred_at"]
    # everything except the target activity goes in through the store (as a CRM import would) ...
    without = CRMHistory(full.accounts, full.leads, full.activities[full.activities["activity_id"] != target["activity_id"]],
                         full.stage_changes, full.opportunities, full.cutoff)
    store = EventStore(served.store_url)
    store.import_history(without)
    store.close()
    # ... and the target activity arrives over HTTP
    body = {"activity_id": target["activity_id"], "lead_id": lead_id, "occurred_at": t.isoformat(),
            "type": target["type"]}
    if pd.notna(target["properties"]):
        body["properties"] = json.loads(target["properties"])
    r = served.client.post("/activities", json=body, headers=AUTH)
    assert r.status_code == 200, r.text
    online = r.json()["scores"][0]
    bundle = _bundle(served)
    batch, reasons = _batch_score(h, lead_id, t, served.settings, bundle)
    assert online["p_sql"] == pytest.approx(batch["p_sql"], abs=1e-12)
    assert online["p_opportunity"] == pytest.approx(batch["p_opportunity"], abs=1e-12)
    assert online["reasons"] == reasons
    sc = h.stage_changes[(h.stage_changes["lead_id"] == lead_id) & (h.stage_changes["changed_at"] <= t)]
    previous = str(sc.sort_values("changed_at")["stage"].iloc[-1]) if len(sc) else None
    assert online["previous_stage"] == previous
    days = None if previous is None else (t - sc["changed_at"].max()).total_seconds() / 86400
    expected_stage = bundle.stage_policy.stage(online["p_sql"], online["p_opportunity"], previous, days_in_stage=days)
    assert online["stage"] == expected_stage


def test_stateless_score_equals_batch_and_stores_nothing(served: Served) -> None:
    acts = [
        {"occurred_at": "2026-10-01T08:00:00Z", "type": "email_open"},
        {"occurred_at": "2026-10-02T08:00:00Z", "type": "pricing_page_view"},
        {"occurred_at": "2026-10-04T08:00:00Z", "type": "demo_request"},
        {"occurred_at": "2026-10-06T08:00:00Z", "type": "page_view"},  # after as_of: must not count
    ]
    req = {"lead": {"lead_id": "stateless-lead", "created_at": "2026-09-20T00:00:00Z", "job_title": "CFO",
                    "email_domain": "example.com"},
           "account": {"account_id": "stateless-acc", "industry": "software", "employees": 120,
                       "created_at": "2026-01-01T00:00:00Z"},
           "activities": acts, "as_of": "2026-10-05T00:00:00Z"}
    r = served.client.post("/score", json=req, headers=AUTH)
    assert r.status_code == 200, r.text
    out = r.json()
    hist = _hist(
        [{"lead_id": "stateless-lead", "account_id": "stateless-acc", "created_at": "2026-09-20", "job_title": "CFO",
          "email_domain": "example.com"}],
        [_activity(f"request-{i}", "stateless-lead", a["occurred_at"], a["type"]) for i, a in enumerate(acts)],
        "2026-10-07",
        accounts=[{"account_id": "stateless-acc", "industry": "software", "employees": 120, "created_at": "2026-01-01"}],
    )
    batch, reasons = _batch_score(hist, "stateless-lead", pd.Timestamp("2026-10-05", tz="UTC"), served.settings, _bundle(served))
    assert out["p_sql"] == pytest.approx(batch["p_sql"], abs=1e-12)
    assert out["p_opportunity"] == pytest.approx(batch["p_opportunity"], abs=1e-12)
    assert out["reasons"] == reasons
    assert served.client.get("/leads/stateless-lead", headers=AUTH).status_code == 404


# ------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"lead_id": "b", "occurred_at": "2026-10-01T00:00:00Z", "type": "page_view"}, "activity_id"),
        ({"activity_id": "b1", "occurred_at": "2026-10-01T00:00:00Z", "type": "page_view"}, "lead_id"),
        ({"activity_id": "b1", "lead_id": "", "occurred_at": "2026-10-01T00:00:00Z", "type": "page_view"}, "lead_id"),
        ({"activity_id": "b1", "lead_id": "b", "occurred_at": "yesterday-ish", "type": "page_view"}, "occurred_at"),
        ({"activity_id": "b1", "lead_id": "b", "occurred_at": "2026-10-01T00:00:00Z", "type": 7}, "type"),
        ({"activity_id": "b1", "lead_id": "b", "occured_at": "2026-10-01T00:00:00Z", "type": "x"}, "occurred_at"),
        ({"activity_id": "b1", "lead_id": "b", "occurred_at": "2026-10-01T00:00:00Z", "type": "page_view",
          "properties": "not-an-object"}, "properties"),
        ({"activity_id": "b1", "lead_id": "b", "occurred_at": "2026-10-01T00:00:00Z", "type": "page_view",
          "account": {"account_id": "a", "employees": "many"}}, "account.employees"),
    ],
)
def test_bad_activity_is_refused_naming_the_field(served: Served, payload: dict[str, Any], field: str) -> None:
    r = served.client.post("/activities", json=payload, headers=AUTH)
    assert r.status_code == 422, r.text
    body = r.json()
    assert field in [e["field"] for e in body["errors"]], body
    assert body["field"] in [e["field"] for e in body["errors"]]


def test_malformed_bodies_and_unknown_stage(served: Served) -> None:
    c = served.client
    r = c.post("/activities", content=b"{not json", headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["field"] == "body"
    r = c.post("/score", json={"lead": {"lead_id": "x"}, "previous_stage": "hot"}, headers=AUTH)
    assert r.status_code == 422 and r.json()["field"] == "previous_stage"
    r = c.post("/score", json={"lead": {}}, headers=AUTH)
    assert r.status_code == 422 and r.json()["field"] == "lead.lead_id"
    r = c.get("/leads/x?limit=0", headers=AUTH)
    assert r.status_code == 422 and r.json()["field"] == "limit"


def test_payload_limits(served: Served) -> None:
    c = served.client
    big = _activity("big-1", "big-lead", "2026-10-01T00:00:00Z", properties={"blob": "x" * 33_000})
    r = c.post("/activities", json=big, headers=AUTH)
    assert r.status_code == 413, r.text
    huge = {"activities": [_activity(f"h{i}", "big-lead", "2026-10-01T00:00:00Z", properties={"b": "y" * 30_000})
                           for i in range(20)]}
    assert c.post("/activities", json=huge, headers=AUTH).status_code == 413
    # a batch under the limit with one oversized event: the rest is stored
    mixed = {"activities": [_activity("big-ok", "big-lead", "2026-10-01T01:00:00Z"), big]}
    r = c.post("/activities", json=mixed, headers=AUTH)
    assert r.status_code == 200
    assert r.json()["stored"] == 1 and [e["index"] for e in r.json()["errors"]] == [1]
    assert c.get("/leads/big-lead", headers=AUTH).json()["activities"] == 1


def test_partial_batch_stores_good_events_and_reports_bad_by_index(served: Served) -> None:
    batch = {"activities": [
        _activity("pb-1", "pb-lead", "2026-10-01T10:00:00Z", "email_click"),
        _activity("pb-2", "pb-lead", "not a time", "email_click"),
        {"activity_id": "pb-3", "occurred_at": "2026-10-01T11:00:00Z", "type": "page_view"},
        _activity("pb-4", "pb-lead", "2026-10-01T12:00:00Z", "some_new_crm_type"),
    ]}
    r = served.client.post("/activities", json=batch, headers=AUTH)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["stored"] == 2 and out["rejected"] == 2
    assert {(e["index"], e["field"]) for e in out["errors"]} == {(1, "activities[1].occurred_at"), (2, "activities[2].lead_id")}
    assert served.client.get("/leads/pb-lead", headers=AUTH).json()["activities"] == 2
    # gzipped bodies are accepted here too
    again = gzip.compress(json.dumps({"activities": [_activity("pb-5", "pb-lead", "2026-10-01T13:00:00Z")]}).encode())
    r = served.client.post("/activities", content=again, headers={**AUTH, "Content-Encoding": "gzip",
                                                                   "Content-Type": "application/json"})
    assert r.status_code == 200 and r.json()["stored"] == 1
    everything_bad = {"activities": [batch["activities"][1], batch["activities"][2]]}
    assert served.client.post("/activities", json=everything_bad, headers=AUTH).status_code == 422


# ------------------------------------------------------------------------------------------ Segment / RudderStack


def _stored_lead(served: Served, lead_id: str) -> dict[str, Any] | None:
    import sqlalchemy as sa

    from leadscore.serving.store import EventStore, leads_t

    store = EventStore(served.store_url)
    try:
        with store.engine.connect() as conn:
            row = conn.execute(sa.select(leads_t).where(leads_t.c.lead_id == lead_id)).mappings().first()
            return dict(row) if row else None
    finally:
        store.close()


def test_segment_sdk_sends_to_the_service(served: Served) -> None:
    from segment.analytics import Client

    errors: list[Any] = []
    client = Client(write_key=WRITE_KEY, host=served.server.url, sync_mode=True, max_retries=0,
                    on_error=lambda e, b: errors.append(e))
    client.identify("seg-lead", {"email": "ana@globex.example", "title": "Director of Operations", "country": "FR",
                                 "company": {"id": "seg-acc", "name": "Globex", "industry": "manufacturing",
                                             "employee_count": 800}})
    ts = pd.Timestamp("2026-10-03T09:30:00Z").to_pydatetime()
    client.track("seg-lead", "Demo Requested", {"plan": "enterprise"}, timestamp=ts, message_id="seg-msg-1")
    client.track("seg-lead", "Demo Requested", {"plan": "enterprise"}, timestamp=ts, message_id="seg-msg-1")
    client.page("seg-lead", name="Pricing", properties={"path": "/pricing"}, timestamp=ts, message_id="seg-msg-2")
    client.track(anonymous_id="anon-42", event="Email Opened", timestamp=ts, message_id="seg-msg-3")  # userId null
    client.flush()  # sync mode: each call above already POSTed and got its answer
    assert errors == []
    view = served.client.get("/leads/seg-lead", headers=AUTH).json()
    assert view["activities"] == 2
    assert view["latest"] is not None and view["latest"]["model_version"]
    lead = _stored_lead(served, "seg-lead")
    assert lead is not None
    assert (lead["job_title"], lead["email_domain"], lead["account_id"]) == ("Director of Operations", "globex.example", "seg-acc")
    assert served.client.get("/leads/anon-42", headers=AUTH).json()["activities"] == 1
    # a wrong write key is refused by the server (the SDK raises it in sync mode)
    from segment.analytics.request import APIError

    wrong = Client(write_key="nope", host=served.server.url, sync_mode=True, max_retries=0)
    with pytest.raises(APIError) as refused:
        wrong.track("seg-lead", "Page Viewed", timestamp=ts, message_id="seg-msg-9")
    assert refused.value.status == 401 and refused.value.code == "unauthorized"
    assert served.client.get("/leads/seg-lead", headers=AUTH).json()["activities"] == 2


def test_rudderstack_sdk_gzipped_with_context_traits(served: Served) -> None:
    from rudderstack.analytics import Client

    errors: list[Any] = []
    rudder = Client(write_key=WRITE_KEY, host=served.server.url, sync_mode=True, gzip=True, max_retries=0,
                    on_error=lambda e, b: errors.append(e))
    ts = pd.Timestamp("2026-10-04T15:00:00Z").to_pydatetime()
    rudder.identify("rs-lead", {"email": "li@initech.example", "title": "CTO", "createdAt": "2026-09-01T00:00:00Z"})
    rudder.track("rs-lead", "Trial Started", {"seats": 5}, timestamp=ts, message_id="rs-msg-1",
                 context={"traits": {"department": "engineering"}})
    rudder.flush()
    assert errors == []
    view = served.client.get("/leads/rs-lead", headers=AUTH).json()
    assert view["activities"] == 1 and view["latest"] is not None
    lead = _stored_lead(served, "rs-lead")
    assert lead is not None and lead["job_title"] == "CTO" and lead["department"] == "engineering"
    # gzip is undone before parsing: a gzipped body with a bad message reports it by index
    body = gzip.compress(json.dumps({"batch": [{"type": "track", "userId": "rs-lead", "event": "x"}]}).encode())
    auth = "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    r = served.client.post("/v1/batch", content=body, headers={"Authorization": auth, "Content-Encoding": "gzip",
                                                                 "Content-Type": "application/json"})
    assert r.status_code == 200 and r.json()["errors"][0]["field"].startswith("batch[0].")
    # the Segment HTTP API's other way to authenticate: writeKey in the (here gzipped) body
    msg = {"type": "track", "userId": "rs-lead", "event": "Webinar Attended", "messageId": "rs-body-key",
           "timestamp": "2026-10-05T10:00:00Z"}
    for key, status in ((WRITE_KEY, 200), ("wrong", 401), (None, 401)):
        body = gzip.compress(json.dumps({"batch": [msg], "writeKey": key}).encode())
        r = served.client.post("/v1/batch", content=body, headers={"Content-Encoding": "gzip",
                                                                     "Content-Type": "application/json"})
        assert r.status_code == status, (key, r.text)
    assert served.client.get("/leads/rs-lead", headers=AUTH).json()["activities"] == 2


# ------------------------------------------------------------------------------------------ HubSpot


def _hubspot(served: Served, events: list[dict[str, Any]], *, secret: str | None = HUBSPOT_SECRET,
             ts_ms: int | None = None, sign: bool = True) -> httpx.Response:
    body = json.dumps(events).encode()
    ts = str(ts_ms if ts_ms is not None else int(time.time() * 1000))
    uri = f"{served.server.url}/webhooks/hubspot"
    headers = {"Content-Type": "application/json", "X-HubSpot-Request-Timestamp": ts}
    if sign and secret is not None:
        msg = b"POST" + uri.encode() + body + ts.encode()
        headers["X-HubSpot-Signature-v3"] = base64.b64encode(hmac.new(secret.encode(), msg, hashlib.sha256).digest()).decode()
    return served.client.post("/webhooks/hubspot", content=body, headers=headers)


def _hs_events(lead: str, stage: str = "salesqualifiedlead") -> list[dict[str, Any]]:
    now = int(time.time() * 1000)
    return [
        {"eventId": 1, "subscriptionType": "contact.creation", "objectId": lead, "occurredAt": now - 60_000},
        {"eventId": 2, "subscriptionType": "contact.propertyChange", "objectId": lead, "occurredAt": now - 30_000,
         "propertyName": "jobtitle", "propertyValue": "Chief Revenue Officer"},
        {"eventId": 3, "subscriptionType": "contact.propertyChange", "objectId": lead, "occurredAt": now - 10_000,
         "propertyName": "lifecyclestage", "propertyValue": stage, "changeSource": "CRM_UI"},
        {"eventId": 4, "subscriptionType": "deal.creation", "objectId": 99, "occurredAt": now},
    ]


def test_hubspot_signed_webhook_creates_lead_and_stage_change(served: Served) -> None:
    r = _hubspot(served, _hs_events("9001"))
    assert r.status_code == 200, r.text
    assert r.json() == {"processed": 3, "stage_changes": 1, "ignored": 1, "rejected": 0, "errors": []}
    view = served.client.get("/leads/9001", headers=AUTH).json()
    assert view["stage"] == "sql"
    assert _stored_lead(served, "9001")["job_title"] == "Chief Revenue Officer"  # type: ignore[index]
    # the stage set by sales is the previous stage of the next score, and the model does not override it
    now = pd.Timestamp.now(tz="UTC").isoformat()
    s = served.client.post("/activities", json=_activity("hs-act-1", "9001", now, "email_open"), headers=AUTH).json()
    assert s["scores"][0]["previous_stage"] == "sql"


@pytest.mark.parametrize(
    ("kind", "kwargs"),
    [
        ("unsigned", {"sign": False}),
        ("forged", {"secret": "not-the-secret"}),
        ("stale", {"ts_ms": int(time.time() * 1000) - 6 * 60_000}),
        ("future", {"ts_ms": int(time.time() * 1000) + 10 * 60_000}),
    ],
)
def test_hubspot_refuses_unsigned_forged_stale_and_future(served: Served, kind: str, kwargs: dict[str, Any]) -> None:
    if kind in ("stale", "future"):  # recompute relative to now (parametrize ran at collection)
        offset = -6 * 60_000 if kind == "stale" else 10 * 60_000
        kwargs = {"ts_ms": int(time.time() * 1000) + offset}
    r = _hubspot(served, _hs_events(f"hs-{kind}"), **kwargs)
    assert r.status_code == 401, r.text
    assert r.json()["field"] in ("X-HubSpot-Signature-v3", "X-HubSpot-Request-Timestamp")
    assert served.client.get(f"/leads/hs-{kind}", headers=AUTH).status_code == 404


def test_hubspot_unknown_lifecycle_stage_names_the_field(served: Served) -> None:
    events = _hs_events("hs-bad-stage", stage="hot_prospect")[2:3]
    r = _hubspot(served, events)
    assert r.status_code == 422
    assert r.json()["field"] == "[0].propertyValue"


# ------------------------------------------------------------------------------------------ restart (last)


def test_restart_keeps_every_stored_activity(served: Served, tmp_path: Path) -> None:
    from leadscore.serving.store import EventStore

    c = served.client
    act = _activity("restart-1", "restart-lead", "2026-10-03T12:00:00Z", "pricing_page_view")
    assert c.post("/activities", json=act, headers=AUTH).json()["stored"] == 1
    store = EventStore(served.store_url)
    before = store.count_activities()
    store.close()
    assert before > 0
    seen_before = c.get("/leads/restart-lead", headers=AUTH).json()
    served.server.stop()
    # come back through `leadscore serve`, serving the same model from its bundle directory
    served.server.env = {k: v for k, v in served.env.items() if k not in ("LEADSCORE_EVENT_STORE", "LEADSCORE_BUNDLE")}
    served.server.cmd = [str(Path(sys.executable).with_name("leadscore")), "--config", str(REPO_ROOT / "configs"),
                         "serve", "--port", "{port}", "--bundle", str(served.bundle_dir), "--store", served.store_url]
    served.server.start()
    ready = c.get("/ready").json()
    assert ready["model_version"].startswith("local:")
    assert c.get("/leads/restart-lead", headers=AUTH).json() == seen_before
    store = EventStore(served.store_url)
    assert store.count_activities() == before
    store.close()
    # the idempotency key survives the restart, too
    again = c.post("/activities", json=act, headers=AUTH).json()
    assert (again["stored"], again["duplicates"]) == (0, 1)
    # the same model from its other source gives the same score as before the restart
    (before_restart,) = [h for h in seen_before["history"] if h["scored_at"] == again["scores"][0]["scored_at"]]
    assert again["scores"][0]["p_sql"] == pytest.approx(before_restart["p_sql"], abs=1e-12)
    assert again["scores"][0]["model_version"] == ready["model_version"]


def test_bentoml_build_succeeds(tmp_path: Path) -> None:
    """The bento installs the leadscore wheel, and its service imports from that wheel alone."""
    import os
    import shutil
    import subprocess
    import zipfile

    ctx = tmp_path / "ctx"
    (ctx / "serving").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "bentofile.yaml", ctx)
    shutil.copy(REPO_ROOT / "serving" / "requirements.txt", ctx / "serving")
    wheel = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(ctx / "dist"),
                            str(REPO_ROOT)], capture_output=True, text=True, timeout=300)
    assert wheel.returncode == 0, wheel.stderr[-3000:]
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml"), "BENTOML_DO_NOT_TRACK": "true"}
    bentoml_bin = Path(sys.executable).with_name("bentoml")
    out = subprocess.run([str(bentoml_bin), "build", str(ctx), "--output", "tag"], env=env, cwd=ctx,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    tag = out.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    name, version = tag.split(":")
    bento = tmp_path / "bentoml" / "bentos" / name / version
    (packed,) = (bento / "env" / "python" / "wheels").glob("leadscore-*.whl")
    names = set(zipfile.ZipFile(packed).namelist())
    assert {"leadscore/serving/service.py", "leadscore/features/engine.py", "leadscore/training/train.py",
            "leadscore/configs/activities.yaml", "leadscore/configs/mappings/x_education.yaml"} <= names
    src = bento / "src"
    # nothing in src/ may shadow the installed package
    assert not [p for p in src.iterdir() if p.name in ("leadscore", "features", "training", "serving", "configs")]
    # run from src/ as BentoML does, with the packed wheel as the only leadscore: the service imports
    code = ("import leadscore.serving.service as s, leadscore.config as c; "
            "print(s.__file__); print(type(s.LeadScoreService).__name__); print(c.load_settings().activity_names[0])")
    run = subprocess.run([sys.executable, "-c", code], cwd=src, capture_output=True, text=True, timeout=300,
                         env={**env, "PYTHONPATH": str(packed), "LEADSCORE_CONFIG_DIR": ""})
    assert run.returncode == 0, run.stderr[-3000:]
    where, kind, first_activity = run.stdout.split()
    assert where.startswith(str(packed)) and kind == "Service" and first_activity
