"""Fresh scores: after late and concurrent activities, every latest stored score is the score of the stored history.

In process (a :class:`ServingState` on a SQLite store, the routes' own ``ingest_and_score``) with the
real model the serving tests share. The check is the same for every lead: once the background queue of
stale leads is drained (:meth:`ServingState.wait_fresh`), its latest audited score must equal the score
computed now, from the store, at that score's moment. The queue itself is checked too: durable (marks
survive a crash and are drained by the next process) and compare-and-clear (a mark made while a lead
is being rescored survives).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from leadscore.config import Settings
from leadscore.serving import stale
from leadscore.serving.schemas import ActivityIn
from leadscore.serving.stale import pending
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


def _inputs(st: ServingState, lead_ids: list[str],
            at: dict[str, pd.Timestamp] | None = None) -> dict[str, tuple[pd.Timestamp, dict[str, object]]]:
    """Each lead's features from the stored history, at its latest score's moment (or at ``at``'s).

    What a stale mark must catch, whatever the model makes of it: a late activity changes these for
    its colleagues (account roll-ups) although their scores' moments lie after it. Checking the inputs,
    not only the probabilities, keeps the tests meaningful for a model that happens to give the
    roll-ups little weight."""
    out = {}
    for lead_id in lead_ids:
        moment = at[lead_id] if at is not None else st.store.score_history(lead_id, limit=1)[0].scored_at
        with st.store.read() as conn:
            arrays = st.store.load_lead(conn, lead_id, moment, st.settings)
        out[lead_id] = (moment, st.scorer.features(arrays, lead_id, moment))
    return out


def _moved(st: ServingState, before: dict[str, tuple[pd.Timestamp, dict[str, object]]]) -> list[str]:
    """Leads whose inputs at the moments of ``before`` differ now."""
    now = _inputs(st, list(before), {lead: moment for lead, (moment, _) in before.items()})
    return [lead for lead in before if now[lead][1] != before[lead][1]]


def _scores(st: ServingState, lead_ids: list[str]) -> dict[str, int]:
    return {lead: len(st.store.score_history(lead, limit=1000)) for lead in lead_ids}


def _stale_leads(st: ServingState, lead_ids: list[str]) -> list[str]:
    """After the queue drained: leads whose latest stored score differs from a score of the stored
    history at its moment."""
    assert st.wait_fresh(timeout=120)
    assert pending(st) == 0
    return _differs(st, lead_ids)


def _differs(st: ServingState, lead_ids: list[str]) -> list[str]:
    """Leads whose latest stored score differs from a score of the stored history at its moment, now."""
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
             "occurred_at": (start + pd.Timedelta(days=25)).isoformat()} for i in (0, 1)]
    before, counts = _inputs(state, leads), _scores(state, leads)
    _post(state, *late)
    # the request scored its own leads only; the colleagues whose inputs it moved are marked, not rescored
    colleagues = [lead for lead in _moved(state, before) if lead not in leads[:2]]
    assert pending(state) > 0 and colleagues != []
    assert _scores(state, colleagues) == {lead: counts[lead] for lead in colleagues}
    assert _stale_leads(state, leads) == []
    # the worker appended a score from the new inputs for each of them
    after = _scores(state, colleagues)
    assert all(after[lead] > counts[lead] for lead in colleagues), (after, counts)


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


def _account_replay(st: ServingState, prefix: str, n: int = 24) -> list[str]:
    """Activities of four leads of one account, a day apart, in time order; returns the leads."""
    leads = [f"{prefix}-{i}" for i in range(4)]
    start = pd.Timestamp("2026-09-01T08:00:00Z")
    for k in range(n):
        _post(st, {"activity_id": f"{prefix}-a{k}", "lead_id": leads[k % 4], "type": "pricing_page_view",
                   "occurred_at": (start + pd.Timedelta(days=k)).isoformat(),
                   "account": {"account_id": f"{prefix}-acc", "employees": 250}})
    assert pending(st) == 0  # in time order: nothing is late, nothing is marked
    return leads


def test_marks_are_committed_with_the_activity_and_drained_by_the_next_process(
        state: ServingState, settings: Settings, bundle_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash right after the activity's commit (before any scoring): the next process finds the marks."""
    from leadscore.serving.scoring import Scorer
    from leadscore.serving.store import EventStore

    leads = _account_replay(state, "crash")
    late = {"activity_id": "crash-late", "lead_id": leads[0], "type": "demo_request",
            "occurred_at": "2026-09-10T12:00:00Z"}

    def crash(*_: object) -> None:
        raise SystemExit("killed")

    before, counts = _inputs(state, leads), _scores(state, leads)
    monkeypatch.setattr(ServingState, "rescore_after_ingest", crash)
    with pytest.raises(SystemExit):
        _post(state, late)
    monkeypatch.undo()
    moved = _moved(state, before)
    assert pending(state) == 1 and [lead for lead in moved if lead != leads[0]] != []
    state.store.close()
    store = EventStore(state.store.url, cache_rows=0)  # the next process, its worker started as the service does
    st2 = ServingState(settings=settings, scorer=Scorer.load(settings, bundle_dir=bundle_dir), store=store,
                       api_keys=[], segment_keys=[], hubspot_secret=None)
    try:
        worker = st2.start_stale_worker()
        assert worker.running
        assert worker.wait_drained(timeout=120)
        assert pending(st2) == 0 and _differs(st2, leads) == []
        assert all(_scores(st2, moved)[lead] > counts[lead] for lead in moved)
    finally:
        st2.stop_stale_worker()
        store.close()


def test_a_mark_made_while_a_lead_is_rescored_survives(state: ServingState) -> None:
    """Compare-and-clear: the worker clears the mark it read, not one written after it."""
    leads = _account_replay(state, "cas")
    with state.store.begin() as conn:
        stale.mark_own(state, conn, leads[1], pd.Timestamp("2026-09-22T08:00:00Z"))
    [read] = stale._read(state, False, 10)
    with state.store.begin() as conn:  # another request marks the lead again meanwhile
        stale.mark_own(state, conn, leads[1], pd.Timestamp("2026-09-22T08:00:00Z"))
    assert stale.refresh(state, read) is False
    assert pending(state) == 1
    assert state.wait_fresh(timeout=60) and pending(state) == 0
