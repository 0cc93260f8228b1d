"""The API contract on a PostgreSQL event store, and two replicas sharing it.

The in-process API tests of ``tests/test_api_inprocess.py`` that touch the store (store and score,
idempotency, a batch, a lead's history) run here again on a real PostgreSQL server: they are imported,
so pytest runs them with this module's ``state`` fixture. Then what replicas rely on: two apps, each
with its own engine on one PostgreSQL database (what two ``leadscore serve`` processes behind a load
balancer are), see each other's writes at once and keep idempotency between them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from leadscore.config import Settings
from leadscore.serving.app import create_app
from leadscore.serving.scoring import Scorer
from leadscore.serving.state import ServingState
from leadscore.serving.store import EventStore
from tests.api_support import API_KEY, AUTH
from tests.conftest import SmallModel
from tests.pg_support import PostgresServer
from tests.test_api_inprocess import (  # noqa: F401  (collected here, on PostgreSQL)
    test_a_batch_stores_the_good_items_and_reports_the_bad_by_index,
    test_get_lead_returns_latest_score_and_history,
    test_post_activity_stores_it_and_answers_the_new_score,
    test_the_same_activity_twice_counts_once,
)


@pytest.fixture(scope="module")
def scorer(small_model: SmallModel, settings: Settings) -> Scorer:
    return Scorer.load(settings, bundle_dir=small_model.bundle_dir)


@pytest.fixture()
def pg_url(postgres: PostgresServer) -> str:
    return postgres.database()


def _replica(settings: Settings, scorer: Scorer, url: str, cache_rows: int = 0) -> ServingState:
    return ServingState(settings=settings, scorer=scorer, store=EventStore(url, cache_rows=cache_rows),
                        api_keys=[API_KEY], segment_keys=[], hubspot_secret=None)


@pytest.fixture()
def state(settings: Settings, scorer: Scorer, pg_url: str) -> Iterator[ServingState]:
    st = _replica(settings, scorer, pg_url)
    yield st
    st.store.close()


@pytest.fixture()
def client(state: ServingState) -> Iterator[TestClient]:
    with TestClient(create_app(state)) as c:
        yield c


@pytest.fixture()
def replicas(settings: Settings, scorer: Scorer, pg_url: str) -> Iterator[tuple[TestClient, TestClient, ServingState]]:
    """Two apps on one PostgreSQL database, each with its own engine (and a cache, which PostgreSQL bypasses)."""
    a, b = (_replica(settings, scorer, pg_url, cache_rows=1_000_000) for _ in range(2))
    try:
        with TestClient(create_app(a)) as ca, TestClient(create_app(b)) as cb:
            yield ca, cb, a
    finally:
        a.store.close()
        b.store.close()


def _activity(aid: str, who: str, at: str, typ: str = "pricing_page_view", **extra: Any) -> dict[str, Any]:
    return {"activity_id": aid, "lead_id": who, "occurred_at": at, "type": typ, **extra}


def _scores(body: dict[str, Any]) -> tuple[float, float]:
    (s,) = body["scores"]
    return s["p_sql"], s["p_opportunity"]


def test_the_activity_cache_is_bypassed_on_postgresql(replicas: tuple[TestClient, TestClient, ServingState]) -> None:
    """Its rowid marks exist only in SQLite: on PostgreSQL every history is read from SQL (never stale)."""
    _, _, a = replicas
    assert a.store.dialect == "postgresql" and a.store.cache is None and a.store.warm_cache() == 0


def test_an_activity_posted_to_one_replica_is_in_the_next_score_of_the_other(
        replicas: tuple[TestClient, TestClient, ServingState]) -> None:
    ca, cb, _ = replicas
    lead = {"job_title": "VP Engineering"}
    account = {"account_id": "rep-acc", "employees": 300, "industry": "software"}
    first = ca.post("/activities", json=_activity("rep-1", "rep-lead", "2026-10-01T09:00:00Z", "demo_request",
                                                  lead=lead, account=account), headers=AUTH)
    assert first.status_code == 200 and first.json()["stored"] == 1
    # B reads A's score at once (no cache, no replication lag: one database)
    seen = cb.get("/leads/rep-lead", headers=AUTH).json()
    assert seen["activities"] == 1 and seen["latest"]["p_sql"] == first.json()["scores"][0]["p_sql"]
    # B's next score counts A's demo request: it equals the score of both activities, not of its own alone
    second = cb.post("/activities", json=_activity("rep-2", "rep-lead", "2026-10-01T10:00:00Z"), headers=AUTH)
    assert second.status_code == 200 and second.json()["stored"] == 1
    both = {"lead": {"lead_id": "rep-lead", "created_at": "2026-10-01T09:00:00Z", "account_id": "rep-acc", **lead},
            "account": account, "previous_stage": first.json()["scores"][0]["stage"],
            "activities": [{"occurred_at": "2026-10-01T09:00:00Z", "type": "demo_request"},
                           {"occurred_at": "2026-10-01T10:00:00Z", "type": "pricing_page_view"}]}
    alone = {**both, "activities": both["activities"][1:]}
    with_both = ca.post("/score", json=both, headers=AUTH).json()
    without = ca.post("/score", json=alone, headers=AUTH).json()
    assert _scores(second.json()) == pytest.approx((with_both["p_sql"], with_both["p_opportunity"]), abs=1e-12)
    assert (without["p_sql"], without["p_opportunity"]) != pytest.approx(_scores(second.json()), abs=1e-9)
    # and A sees B's score as the latest
    assert ca.get("/leads/rep-lead", headers=AUTH).json()["latest"] == cb.get("/leads/rep-lead", headers=AUTH).json()["latest"]


def test_a_duplicate_sent_to_the_other_replica_counts_once(replicas: tuple[TestClient, TestClient, ServingState]) -> None:
    ca, cb, a = replicas
    act = _activity("dup-r", "dup-lead", "2026-10-02T09:00:00Z", "demo_request")
    first = ca.post("/activities", json=act, headers=AUTH).json()
    again = cb.post("/activities", json=act, headers=AUTH).json()
    assert (first["stored"], first["duplicates"]) == (1, 0)
    assert (again["stored"], again["duplicates"]) == (0, 1)
    assert _scores(again) == pytest.approx(_scores(first), abs=1e-12)
    assert a.store.count_activities("dup-lead") == 1
    assert len(a.store.score_history("dup-lead")) == 1  # a retry is answered, not audited again


def test_the_same_activity_sent_to_both_replicas_at_once_is_stored_once(
        replicas: tuple[TestClient, TestClient, ServingState]) -> None:
    """A CRM retrying on a time-out while the first try is still in flight, the two landing on different replicas."""
    ca, cb, a = replicas
    answers: list[dict[str, Any]] = []
    errors: list[BaseException] = []
    for n in range(8):
        act = _activity(f"race-dup-{n}", f"race-dup-lead-{n % 2}", f"2026-10-03T09:{n:02d}:00Z", "email_click")
        barrier = threading.Barrier(2)

        def post(c: TestClient, act: dict[str, Any] = act, barrier: threading.Barrier = barrier) -> None:
            try:
                barrier.wait()
                r = c.post("/activities", json=act, headers=AUTH)
                assert r.status_code == 200, r.text
                answers.append(r.json())
            except BaseException as exc:  # reported in the test's thread
                errors.append(exc)

        threads = [threading.Thread(target=post, args=(c,)) for c in (ca, cb)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    assert sum(b["stored"] for b in answers) == 8 and sum(b["duplicates"] for b in answers) == 8
    assert a.store.count_activities("race-dup-lead-0") + a.store.count_activities("race-dup-lead-1") == 8


def test_replicas_share_one_store_and_each_gets_its_own_engine(
        replicas: tuple[TestClient, TestClient, ServingState]) -> None:
    """What replicas share is the database, nothing in memory: closing one leaves the other serving."""
    ca, cb, a = replicas
    assert ca.post("/activities", json=_activity("own-1", "own-lead", "2026-10-04T09:00:00Z"),
                   headers=AUTH).json()["stored"] == 1
    a.store.close()
    assert cb.get("/leads/own-lead", headers=AUTH).json()["activities"] == 1
