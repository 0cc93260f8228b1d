"""Fresh scores: after late and concurrent activities, every latest stored score is the score of the stored history.

In process (a :class:`ServingState` on a SQLite store, the routes' own ``ingest_and_score``) with the
real model the serving tests share. The check is the same for every lead: its latest audited score
must equal the score computed now, from the store, at that score's moment.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from leadscore.config import Settings
from leadscore.serving.schemas import ActivityIn
from leadscore.serving.state import ServingState, ingest_and_score
from leadscore.serving.wire import Parsed
from tests.conftest import SmallModel


@pytest.fixture(scope="module")
def bundle_dir(small_model: SmallModel) -> Path:
    """The session's small model (trained once by the real pipeline)."""
    return small_model.bundle_dir


@pytest.fixture(params=[1_000_000, 0], ids=["cache", "sql"])
def state(request: pytest.FixtureRequest, bundle_dir: Path, settings: Settings, tmp_path: Path) -> Iterator[ServingState]:
    """With the in-memory activity cache and without it (every history read from SQL)."""
    from leadscore.serving.scoring import Scorer
    from leadscore.serving.store import EventStore

    store = EventStore(f"sqlite:///{tmp_path / 'events.db'}", cache_rows=request.param)
    yield ServingState(settings=settings, scorer=Scorer.load(settings, bundle_dir=bundle_dir), store=store,
                       api_keys=[], segment_keys=[], hubspot_secret=None)
    store.close()


def _post(st: ServingState, *activities: dict[str, object]) -> None:
    parsed = Parsed()
    parsed.events.extend((i, ActivityIn.model_validate(a)) for i, a in enumerate(activities))
    ingest_and_score(st, parsed)


def _stale_leads(st: ServingState, lead_ids: list[str]) -> list[str]:
    """Leads whose latest stored score differs from a score of the stored history at its moment."""
    stale = []
    for lead_id in lead_ids:
        latest = st.store.score_history(lead_id, limit=1)[0]
        with st.store.read() as conn:
            fresh, _ = st.score_stored(conn, lead_id, latest.scored_at)
        if (latest.p_sql, latest.p_opportunity) != pytest.approx((fresh.p_sql, fresh.p_opportunity), abs=1e-12):
            stale.append(lead_id)
    return stale


def test_out_of_order_replay_leaves_no_stale_colleague(state: ServingState) -> None:
    """A late activity changes its colleagues' 30-day account roll-ups: their latest scores are refreshed."""
    rng = random.Random(7)
    leads = [f"ooo-{i}" for i in range(6)]
    start = pd.Timestamp("2026-09-01T08:00:00Z")
    acts = []
    for n in range(48):
        lead = leads[n % len(leads)]
        at = start + pd.Timedelta(hours=rng.randrange(0, 24 * 40))
        acts.append({"activity_id": f"ooo-a{n}", "lead_id": lead, "occurred_at": at.isoformat(),
                     "type": rng.choice(["pricing_page_view", "demo_request", "email_click", "webinar_attended"]),
                     "lead": {"created_at": "2026-08-01T00:00:00Z", "job_title": "Head of Sales"},
                     "account": {"account_id": "ooo-acc", "employees": 250, "industry": "software"}})
    rng.shuffle(acts)  # a replay in arrival order, not in time order
    for a in acts:
        _post(state, a)
    assert _stale_leads(state, leads) == []
    # a late batch of several leads at once, far in the past of every latest score but inside the window
    late = [{"activity_id": f"ooo-late{i}", "lead_id": leads[i], "type": "demo_request",
             "occurred_at": (start + pd.Timedelta(days=39)).isoformat()} for i in (0, 1)]
    _post(state, *late)
    assert _stale_leads(state, leads) == []


def test_concurrent_activities_of_one_lead_keep_the_newest_as_latest(state: ServingState) -> None:
    """Two requests for one lead at once: whichever commits last, the latest score sees both activities."""
    leads = []
    errors: list[BaseException] = []
    for r in range(12):
        lead = f"race-{r}"
        leads.append(lead)
        base = pd.Timestamp("2026-10-01T09:00:00Z") + pd.Timedelta(days=r)
        _post(state, {"activity_id": f"race-{r}-0", "lead_id": lead, "occurred_at": base.isoformat(),
                      "type": "page_view", "account": {"account_id": f"race-acc-{r % 3}", "employees": 80}})
        barrier = threading.Barrier(3)

        def post(i: int, at: pd.Timestamp, lead: str = lead, barrier: threading.Barrier = barrier) -> None:
            try:
                barrier.wait()
                _post(state, {"activity_id": f"{lead}-{i}", "lead_id": lead, "occurred_at": at.isoformat(),
                              "type": "demo_request" if i % 2 else "pricing_page_view"})
            except BaseException as exc:  # reported below, in the test's thread
                errors.append(exc)

        # the same moment (ties are broken by insertion), and a late one racing a newer one
        times = [base + pd.Timedelta(hours=2), base + pd.Timedelta(hours=2), base + pd.Timedelta(hours=1)]
        threads = [threading.Thread(target=post, args=(i + 1, t)) for i, t in enumerate(times)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    assert _stale_leads(state, leads) == []
