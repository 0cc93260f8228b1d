"""Fresh scores on PostgreSQL: concurrent activities of one lead, from one replica and from two.

``tests/test_serving_fresh.py`` holds the freshness contract (every lead's latest stored score equals
the score computed now from the stored history at that score's moment); its tests run here again on a
real PostgreSQL server. Then the race that only replicas produce: requests for one lead arriving at
two service instances, each with its own engine and connection pool, on one database, where
PostgreSQL's READ COMMITTED (not SQLite's single writer) decides what each transaction sees.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pandas as pd
import pytest
from sqlalchemy import event as sa_event

from leadscore.config import Settings
from leadscore.serving.scoring import Scorer
from leadscore.serving.state import ServingState
from leadscore.serving.store import EventStore
from tests.conftest import SmallModel
from tests.pg_support import PostgresServer
from tests.test_serving_fresh import (  # noqa: F401  (collected here, on PostgreSQL)
    _post,
    _stale_leads,
    test_concurrent_activities_of_one_lead_keep_the_newest_as_latest,
    test_out_of_order_replay_leaves_no_stale_colleague,
)


@pytest.fixture(scope="module")
def scorer(small_model: SmallModel, settings: Settings) -> Scorer:
    return Scorer.load(settings, bundle_dir=small_model.bundle_dir)


def _serving(settings: Settings, scorer: Scorer, url: str) -> ServingState:
    return ServingState(settings=settings, scorer=scorer, store=EventStore(url), api_keys=[], segment_keys=[],
                        hubspot_secret=None)


@pytest.fixture()
def state(settings: Settings, scorer: Scorer, postgres: PostgresServer) -> Iterator[ServingState]:
    st = _serving(settings, scorer, postgres.database())
    yield st
    st.store.close()


@pytest.fixture()
def two_replicas(settings: Settings, scorer: Scorer, postgres: PostgresServer) -> Iterator[list[ServingState]]:
    url = postgres.database()
    states = [_serving(settings, scorer, url) for _ in range(2)]
    yield states
    for st in states:
        st.store.close()


def test_concurrent_activities_of_one_lead_on_two_replicas_leave_a_fresh_latest_score(
        two_replicas: list[ServingState]) -> None:
    """Per round, four activities of one lead at once, two sent to each replica: the same moment twice
    (ties broken by insertion), a late one racing newer ones; leads share accounts, so colleagues race too."""
    leads: list[str] = []
    errors: list[BaseException] = []
    for r in range(16):
        lead = f"rr-{r}"
        leads.append(lead)
        base = pd.Timestamp("2026-10-01T09:00:00Z") + pd.Timedelta(hours=6 * r)
        _post(two_replicas[r % 2], {"activity_id": f"{lead}-0", "lead_id": lead, "occurred_at": base.isoformat(),
                                    "type": "page_view", "account": {"account_id": f"rr-acc-{r % 3}", "employees": 80}})
        times = [base + pd.Timedelta(hours=2), base + pd.Timedelta(hours=2), base + pd.Timedelta(hours=1),
                 base + pd.Timedelta(hours=3)]
        barrier = threading.Barrier(len(times))

        def post(i: int, at: pd.Timestamp, lead: str = lead, barrier: threading.Barrier = barrier) -> None:
            try:
                barrier.wait()
                _post(two_replicas[i % 2], {"activity_id": f"{lead}-{i + 1}", "lead_id": lead,
                                            "occurred_at": at.isoformat(),
                                            "type": ("demo_request", "pricing_page_view", "webinar_attended")[i % 3]})
            except BaseException as exc:  # reported below, in the test's thread
                errors.append(exc)

        threads = [threading.Thread(target=post, args=(i, t)) for i, t in enumerate(times)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    assert two_replicas[0].store.count_activities() == 16 * 5
    assert _stale_leads(two_replicas[1], leads) == []


@pytest.fixture()
def replicas_on(settings: Settings, scorer: Scorer, store_url: str) -> Iterator[list[ServingState]]:
    """Two service instances on one store, on each backend."""
    states = [_serving(settings, scorer, store_url) for _ in range(2)]
    yield states
    for st in states:
        st.store.close()


def _hold_score_commit(store: EventStore, lead_id: str, held: threading.Event, released: threading.Event) -> None:
    """Make the first transaction of ``store`` that appends a score of ``lead_id`` wait at its COMMIT.

    After everything that transaction checked, before it commits: what a slow commit (a full disk
    queue, a network hop to the database, a GC pause in the worker) does to a request. Found through
    the engine's ``commit`` event and a count of the lead's scores inside the transaction against one
    outside it, so nothing of how rescoring is written is assumed.
    """
    armed = [True]

    def scores_of(cursor_of: object) -> int:
        cur = cursor_of.cursor()  # type: ignore[attr-defined]
        try:
            cur.execute("SELECT count(*) FROM scores WHERE lead_id = " + ("?" if store.dialect == "sqlite" else "%s"),
                        (lead_id,))
            return int(cur.fetchone()[0])
        finally:
            cur.close()

    def on_commit(conn: object) -> None:
        if not armed[0]:
            return
        inside = scores_of(conn.connection)  # type: ignore[attr-defined]
        outside_conn = store.engine.raw_connection()
        try:
            outside = scores_of(outside_conn)
        finally:
            outside_conn.close()
        if inside > outside:
            armed[0] = False
            held.set()
            released.wait(timeout=5)

    sa_event.listen(store.engine, "commit", on_commit)


def test_a_late_activity_committed_while_a_newer_score_commits_leaves_no_stale_latest(
        replicas_on: list[ServingState]) -> None:
    """The race of ``serving/rescore.py``'s docstring, made to happen every time.

    Replica A scores a lead's new activity (at 11:00) and checks that nothing it read has changed; its
    commit is then held. Meanwhile replica B stores a late activity of the lead (at 10:00), scores it and
    looks for scores it made stale: A's is not committed yet, so B refreshes nothing. A commits. Its
    11:00 score, the latest, would miss B's 10:00 activity unless the store makes B wait for A (SQLite's
    single writer does: B's write waits for A's commit, then B sees A's score and marks it stale;
    on PostgreSQL the per-account advisory lock of :func:`leadscore.serving.stale.serialize` does).
    """
    a, b = replicas_on
    lead = "held-lead"
    base = pd.Timestamp("2026-11-02T09:00:00Z")
    _post(a, {"activity_id": "held-0", "lead_id": lead, "occurred_at": base.isoformat(), "type": "page_view",
              "account": {"account_id": "held-acc", "employees": 120}})
    held, released = threading.Event(), threading.Event()
    _hold_score_commit(a.store, lead, held, released)
    errors: list[BaseException] = []

    def newer_on_a() -> None:
        try:
            _post(a, {"activity_id": "held-new", "lead_id": lead, "type": "pricing_page_view",
                      "occurred_at": (base + pd.Timedelta(hours=2)).isoformat()})
        except BaseException as exc:  # reported in the test's thread
            errors.append(exc)

    thread = threading.Thread(target=newer_on_a)
    thread.start()
    try:
        assert held.wait(timeout=120), "replica A never appended its score"
        _post(b, {"activity_id": "held-late", "lead_id": lead, "type": "demo_request",
                  "occurred_at": (base + pd.Timedelta(hours=1)).isoformat()})
    finally:
        released.set()
        thread.join()
    assert errors == []
    assert a.store.count_activities(lead) == 3
    assert _stale_leads(b, [lead]) == []
