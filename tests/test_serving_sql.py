"""What one ``POST /activities`` costs the event store, bounded so that it cannot creep back up.

Counted through the route (FastAPI's test client, in process) on SQLite with SQLite's own trace
callback (:mod:`leadscore.serving.sql_count`: every statement, the raw-cursor ones and the
transactions' ``BEGIN``/``COMMIT`` included) and the pool's checkout events. A new in-order activity
of a known lead runs: the ingest transaction (the lead's row, the insert, the late check), the
scoring read (lead and account, the activity cache's sync and membership version or, without the
cache, the activities themselves, stage changes, opportunities, the stage before), the append
transaction (the score, its check) and the trend read of the answer, on one connection.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from leadscore.config import Settings
from leadscore.serving.app import create_app
from leadscore.serving.sql_count import SqlCounter
from leadscore.serving.state import ServingState
from leadscore.serving.store import EventStore
from tests.api_support import API_KEY, AUTH
from tests.conftest import SmallModel

#: statements of one new activity (besides BEGIN/COMMIT): with the activity cache, and reading SQL only
#: (the read adds the rowid mark, the lead's and the colleagues' activities and the members' creation times,
#: and drops the cache's sync and membership version)
BOUND = {"cache": 13, "sql": 15}


@pytest.fixture(params=[1_000_000, 0], ids=["cache", "sql"])
def state(request: pytest.FixtureRequest, small_model: SmallModel, settings: Settings,
          tmp_path: Path) -> Iterator[ServingState]:
    from leadscore.serving.scoring import Scorer

    store = EventStore(f"sqlite:///{tmp_path / 'events.db'}", cache_rows=request.param)
    yield ServingState(settings=settings, scorer=Scorer.load(settings, bundle_dir=small_model.bundle_dir),
                       store=store, api_keys=[API_KEY], segment_keys=[], hubspot_secret=None)
    store.close()


def _activity(i: int, lead: str, **extra: object) -> dict[str, object]:
    return {"activity_id": f"sql-{i}", "lead_id": lead, "type": ["pricing_page_view", "demo_request"][i % 2],
            "occurred_at": f"2026-09-{1 + i:02d}T10:00:00Z", **extra}


def test_one_activity_is_one_connection_two_transactions_and_a_bounded_number_of_statements(
        state: ServingState, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    client = TestClient(create_app(state))  # no lifespan: no background worker sharing the pool
    account = {"account_id": "sql-acc", "employees": 120, "industry": "software"}
    leads = ["sql-a", "sql-b", "sql-c"]
    for i in range(9):  # history: three leads of one account, and one without account
        assert client.post("/activities", json=_activity(i, leads[i % 3], account=account), headers=AUTH).status_code == 200
    assert client.post("/activities", json=_activity(9, "sql-solo"), headers=AUTH).status_code == 200
    bound = BOUND[request.node.callspec.id]
    for i, lead in ((10, "sql-a"), (11, "sql-solo")):
        with SqlCounter(state.store.engine) as sql:
            r = client.post("/activities", json=_activity(i, lead), headers=AUTH)
        assert r.status_code == 200 and r.json()["stored"] == 1 and len(r.json()["scores"]) == 1
        assert sql.checkouts == 1, sql.checkouts
        assert sql.transactions == 2, sql.statements
        assert len(sql.queries) <= bound, "\n".join(sql.queries)
        assert sql.kinds()["INSERT"] == 2  # the activity and its score's audit row, nothing else written
        # answered after both commits: another connection (another process) sees the activity and the audit row
        other = EventStore(f"sqlite:///{tmp_path / 'events.db'}")
        try:
            assert other.count_activities(lead) == {"sql-a": 4, "sql-solo": 2}[lead]
            latest = other.score_history(lead, limit=1)[0]
            assert latest.p_sql == pytest.approx(r.json()["scores"][0]["p_sql"], abs=1e-12)
        finally:
            other.close()


def test_a_retried_activity_writes_nothing(state: ServingState) -> None:
    """A duplicate is answered with the lead's score at that moment, from reads alone: no insert commits."""
    client = TestClient(create_app(state))
    first = _activity(0, "sql-retry", account={"account_id": "sql-acc-2", "employees": 40})
    assert client.post("/activities", json=first, headers=AUTH).json()["stored"] == 1
    body = _activity(1, "sql-retry")
    answers = [client.post("/activities", json=body, headers=AUTH).json()]
    with SqlCounter(state.store.engine) as sql:
        answers.append(client.post("/activities", json=body, headers=AUTH).json())
    assert answers[1]["duplicates"] == 1 and answers[1]["scores"] == answers[0]["scores"]
    assert sql.checkouts == 1 and sql.transactions == 1  # the ingest's, which the ignored insert opened
    assert sql.kinds()["INSERT"] == 1 and sql.kinds()["UPDATE"] == 0  # only the insert the retry ignored
