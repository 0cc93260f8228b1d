"""The scoring API in process: ``TestClient(create_app(state))`` with a real bundle and event store.

The same routes ``tests/test_serving.py`` drives through a ``bentoml serve`` process, here without a
server: an app built from an explicit :class:`ServingState` (settings, model, store, secrets), which
is what lets a test (or a second app in the same process) choose every part of the state.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from leadscore.config import Settings
from leadscore.serving.app import create_app
from leadscore.serving.state import ServingState
from tests.api_support import AUTH, make_state
from tests.conftest import SmallModel


@pytest.fixture(scope="module")
def bundle_dir(small_model: SmallModel) -> Path:
    """The session's small bundle trained by the real pipeline (a real model, not a good one)."""
    return small_model.bundle_dir


@pytest.fixture()
def state(bundle_dir: Path, settings: Settings, tmp_path: Path) -> Iterator[ServingState]:
    st = make_state(settings, bundle_dir, tmp_path / "events.db")
    yield st
    st.store.close()


@pytest.fixture()
def client(state: ServingState) -> Iterator[TestClient]:
    with TestClient(create_app(state)) as c:
        yield c


def _activity(aid: str, who: str, at: str, typ: str = "pricing_page_view", **extra: Any) -> dict[str, Any]:
    return {"activity_id": aid, "lead_id": who, "occurred_at": at, "type": typ, **extra}


def test_post_activity_stores_it_and_answers_the_new_score(client: TestClient, state: ServingState) -> None:
    act = _activity("a-1", "lead-1", "2026-10-01T10:00:00Z", lead={"job_title": "VP Engineering"},
                    account={"account_id": "acc-1", "employees": 400, "industry": "software"})
    r = client.post("/activities", json=act, headers=AUTH)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["stored"], body["duplicates"], body["rejected"]) == (1, 0, 0)
    (score,) = body["scores"]
    assert score["lead_id"] == "lead-1" and score["scored_at"].startswith("2026-10-01T10:00:00")
    assert 0.0 <= score["p_opportunity"] <= 1.0 and 0.0 <= score["p_sql"] <= 1.0
    assert score["stage"] in state.settings.stages.all
    assert score["model_version"] == state.scorer.version
    assert state.store.count_activities("lead-1") == 1  # committed before the answer


def test_the_same_activity_twice_counts_once(client: TestClient, state: ServingState) -> None:
    act = _activity("dup-1", "lead-dup", "2026-10-02T09:00:00Z")
    first = client.post("/activities", json=act, headers=AUTH).json()
    again = client.post("/activities", json=act, headers=AUTH).json()
    assert (first["stored"], first["duplicates"]) == (1, 0)
    assert (again["stored"], again["duplicates"]) == (0, 1)
    assert again["scores"][0]["p_sql"] == first["scores"][0]["p_sql"]
    assert state.store.count_activities("lead-dup") == 1


def test_bad_timestamp_is_a_4xx_naming_the_field_and_stores_nothing(client: TestClient, state: ServingState) -> None:
    r = client.post("/activities", json=_activity("bad-1", "lead-bad", "yesterday-ish"), headers=AUTH)
    assert r.status_code == 422
    body = r.json()
    assert body["field"] == "occurred_at" and [e["field"] for e in body["errors"]] == ["occurred_at"]
    assert state.store.count_activities("lead-bad") == 0
    not_json = client.post("/activities", content=b"{oops", headers={**AUTH, "Content-Type": "application/json"})
    assert (not_json.status_code, not_json.json()["field"]) == (400, "body")


def test_a_batch_stores_the_good_items_and_reports_the_bad_by_index(client: TestClient) -> None:
    batch = {"activities": [_activity("b-1", "lead-b", "2026-10-03T08:00:00Z"),
                            _activity("b-2", "lead-b", "not a time"),
                            _activity("b-3", "lead-b", "2026-10-03T09:00:00Z", typ="demo_request")]}
    body = client.post("/activities", json=batch, headers=AUTH).json()
    assert (body["stored"], body["rejected"]) == (2, 1)
    assert [(e["index"], e["field"]) for e in body["errors"]] == [(1, "activities[1].occurred_at")]
    assert [s["scored_at"][:19] for s in body["scores"]] == ["2026-10-03T09:00:00"]


def test_get_lead_returns_latest_score_and_history(client: TestClient) -> None:
    for i, at in enumerate(("2026-10-04T08:00:00Z", "2026-10-05T08:00:00Z")):
        client.post("/activities", json=_activity(f"g-{i}", "lead-g", at), headers=AUTH)
    r = client.get("/leads/lead-g", headers=AUTH)
    assert r.status_code == 200, r.text
    lead = r.json()
    assert lead["lead_id"] == "lead-g" and lead["activities"] == 2
    assert [h["scored_at"][:10] for h in lead["history"]] == ["2026-10-05", "2026-10-04"]
    assert lead["latest"] == lead["history"][0]
    missing = client.get("/leads/nobody", headers=AUTH)
    assert (missing.status_code, missing.json()["field"], missing.json()["code"]) == (404, "lead_id", "not_found")


def test_every_route_but_health_needs_the_api_key(client: TestClient, state: ServingState) -> None:
    act = _activity("auth-1", "lead-auth", "2026-10-01T10:00:00Z")
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        r = client.post("/activities", json=act, headers=headers)
        assert (r.status_code, r.json()["field"]) == (401, "Authorization")
        assert r.headers["WWW-Authenticate"] == "Bearer"
        assert client.post("/score", json={"lead": {"nope": 1}}, headers=headers).status_code == 401
        assert client.get("/leads/lead-auth", headers=headers).status_code == 401
    assert state.store.count_activities("lead-auth") == 0
    assert client.get("/health").json() == {"status": "ok"}


def test_stateless_score_stores_nothing(client: TestClient, state: ServingState) -> None:
    req = {"lead": {"lead_id": "what-if", "job_title": "CTO"},
           "activities": [{"occurred_at": "2026-10-01T10:00:00Z", "type": "demo_request"}]}
    r = client.post("/score", json=req, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["lead_id"] == "what-if" and r.json()["model_version"] == state.scorer.version
    assert client.get("/leads/what-if", headers=AUTH).status_code == 404


def test_ready_reports_the_state_it_was_built_with(client: TestClient, state: ServingState) -> None:
    ready = client.get("/ready").json()
    assert ready["status"] == "ready" and ready["model_version"] == state.scorer.version
    assert ready["auth"] == {"api_keys": 1, "segment_write_keys": 0, "hubspot_secret": False}


def test_two_apps_in_one_process_keep_their_own_state(state: ServingState, tmp_path: Path) -> None:
    """No module-level app: a second app on another store and key sees none of the first one's data."""
    from leadscore.serving.store import EventStore

    other_store = EventStore(f"sqlite:///{tmp_path / 'other.db'}")
    other = ServingState(settings=state.settings, scorer=state.scorer, store=other_store, api_keys=["other-key"],
                         segment_keys=[], hubspot_secret=None)
    try:
        with TestClient(create_app(state)) as first, TestClient(create_app(other)) as second:
            assert first.post("/activities", json=_activity("t-1", "lead-t", "2026-10-01T10:00:00Z"),
                              headers=AUTH).json()["stored"] == 1
            assert second.get("/leads/lead-t", headers={"Authorization": "Bearer other-key"}).status_code == 404
            assert second.get("/leads/lead-t", headers=AUTH).status_code == 401
    finally:
        other_store.close()
