"""Fresh scores: after every write, each affected lead's latest stored score is the score of its stored history.

Two ways a latest score used to go stale:

* **Colleagues of a late activity.** A lead's features count its account colleagues' activities of the
  last 30 days (``account_other_leads_*_30d``). An activity that arrives late (older than the newest
  scores) changes those roll-ups for every colleague whose latest score lies within 30 days after it,
  but only its own lead was re-scored (14 of 50 leads stale in an out-of-order replay).
* **Concurrent requests.** A request scores from a read of the history, then appends the score. If
  another request commits an activity in between, and reads the latest scores before ours is
  appended, neither sees the other: the appended score misses an activity (36 of 300 races).

What is done here:

* Colleagues are **re-scored in the request**, not marked stale for a background job. Only a late
  activity can make a colleague stale (in-order traffic has no colleague score after it), so the cost
  falls on the rare late request, and is found with one indexed query. In exchange the answer the CRM
  gets is already consistent (``GET /leads/{id}`` of any colleague is fresh the moment the request
  returns), and nothing has to survive a crash or be coordinated between replicas: a background queue
  would live in one worker's memory (lost by ``kill -9``) or need a new table, a poller and its
  supervision, for the same rows. Under concurrency, scores appended after the activity committed
  were already checked against it (below) and are skipped (:func:`score_mark`): with 40 requests in
  flight on an account holding a quarter of all leads, 17 refreshes per 600 requests instead of 413.
* Every appended score is **checked in its write transaction**: the score is inserted, then the
  check asks whether an activity the score should have counted (the lead's, up to the moment scored,
  or a colleague's in the account window before it) or a new starting stage was committed since the
  score read the history; if so the insert is rolled back and the lead scored again. The write
  transaction holds SQLite's write lock, so nothing can commit between the check and the commit; a
  request whose activity commits after that sees our score as the latest and refreshes it itself.
  On SQLite "since" is a rowid mark read before the history (rowids are handed out in commit order,
  see :mod:`serving.cache`), so the check reads only the few rows committed meanwhile and holds the
  write lock for well under a millisecond. Elsewhere the rows the score read are counted again
  (activities are insert-only, so equal counts mean equal rows); PostgreSQL runs that check under
  READ COMMITTED, which narrows but does not close the window.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pandas as pd
from sqlalchemy.engine import Connection

from leadscore.serving.scoring import ScoreResult
from leadscore.serving.store import StoredScore, from_micros, to_micros

if TYPE_CHECKING:
    from leadscore.serving.state import ServingState

log = logging.getLogger("leadscore.serving")

#: score, check, roll back: this many tries before a score is appended unchecked (and logged)
MAX_ATTEMPTS = 5

#: what a score was computed from: (rowid mark before the read on SQLite, else the activities read;
#: the stage it started from and since when)
Fingerprint = tuple[int, tuple[str | None, pd.Timestamp | None]]


class _Moved(Exception):
    """Something the score read changed before it was appended: roll back and score again."""


def stored_score(r: ScoreResult, stage_since: pd.Timestamp) -> StoredScore:
    """The audit row of a score."""
    return StoredScore(
        lead_id=r.lead_id,
        scored_at=r.scored_at,
        computed_at=pd.Timestamp.now(tz="UTC"),
        p_sql=r.p_sql,
        p_opportunity=r.p_opportunity,
        stage=r.stage,
        previous_stage=r.previous_stage,
        model_version=r.model_version,
        reasons=r.reasons,
        stage_since=stage_since,
    )


def score_with_fingerprint(
    st: ServingState, conn: Connection, lead_id: str, as_of: pd.Timestamp
) -> tuple[ScoreResult, pd.Timestamp, Fingerprint]:
    """Score a stored lead at ``as_of`` from exactly the history known up to then.

    Also returns since when the lead holds the resulting stage (for recycling and the audit) and
    what the score was computed from (to check it is still current when it is appended).
    """
    q = st.store.q
    mark = None if q.activity_mark is None else int(q.activity_mark.first(conn)[0])  # type: ignore[index]
    history = st.store.load_lead(conn, lead_id, as_of, st.settings)
    previous, since = st.store.current_stage(conn, lead_id, as_of)
    days = None if since is None else max((as_of - since).total_seconds(), 0.0) / 86400.0
    result = st.scorer.score(history, lead_id, as_of, previous, days_in_stage=days)
    stage_since = since if (since is not None and result.stage == previous) else as_of
    read = history.rows_read if mark is None else mark
    return result, stage_since, (read, (previous, since))


def still_current(st: ServingState, conn: Connection, lead_id: str, as_of: pd.Timestamp, seen: Fingerprint) -> bool:
    """Whether a score computed from ``seen`` is still the score of what ``conn`` sees now."""
    if st.store.current_stage(conn, lead_id, as_of) != seen[1]:
        return False
    q, cut = st.store.q, to_micros(as_of)
    account_id = _account_of(st, conn, lead_id)
    if q.activities_since_mark is not None:
        for who, at, account in q.activities_since_mark.all(conn, mark=seen[0]):
            if at <= cut and (who == lead_id or (account_id is not None and account == account_id
                                                 and at > cut - st.store.colleague_window_us)):
                return False
        return True
    n = int(q.count_own_activities.first(conn, lead_id=lead_id, cut=cut)[0])  # type: ignore[index]
    if account_id is not None:
        n += int(q.count_colleague_activities.first(  # type: ignore[index]
            conn, account_id=account_id, lead_id=lead_id, since=cut - st.store.colleague_window_us, cut=cut)[0])
    return n == seen[0]


def _account_of(st: ServingState, conn: Connection, lead_id: str) -> Any:
    q = st.store.q
    row = q.lead.first(conn, lead_id=lead_id)
    return None if row is None else row[q.lead_columns.index("account_id")]


def append_fresh(st: ServingState, lead_id: str, as_of: pd.Timestamp) -> ScoreResult:
    """Score the lead at ``as_of`` and append it to the audit, checked current at its commit."""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        with st.store.read() as conn:  # reads and the model outside the write lock
            result, since, seen = score_with_fingerprint(st, conn, lead_id, as_of)
        try:
            with st.store.begin() as conn:
                st.store.append_score(conn, stored_score(result, since))
                if attempt < MAX_ATTEMPTS and not still_current(st, conn, lead_id, as_of, seen):
                    raise _Moved
            return result
        except _Moved:
            continue
    log.warning("lead %s: history kept changing while scoring at %s; appended after %d tries",
                lead_id, as_of, MAX_ATTEMPTS)
    return result


def score_mark(st: ServingState) -> int | None:
    """On SQLite, the newest score id now (ids, like activity rowids, are handed out in commit order).

    Read right after a request's activities commit: a score appended after that (a larger id) was
    checked current by :func:`append_fresh` against a history that already held them, so it needs no
    refresh on their account. Under concurrency this is most of the candidates: the colleagues' scores
    of requests in flight. ``None`` elsewhere (every candidate is refreshed).
    """
    if st.store.dialect != "sqlite":
        return None
    with st.store.read() as conn:
        return int(st.store.q.score_mark.first(conn)[0])  # type: ignore[index]


def _predates(mark: int | None, score_id: int) -> bool:
    return mark is None or score_id <= mark


def stale_scores(st: ServingState, lead_id: str, first: pd.Timestamp, last: pd.Timestamp, as_of: pd.Timestamp,
                 mark: int | None) -> list[tuple[str, pd.Timestamp]]:
    """The latest scores that new activities of ``lead_id`` at ``[first, last]`` made stale, as
    ``(lead, scored_at)``: the lead's own if it is after ``as_of`` (the moment just scored); each
    colleague's if it counts them in its account window (scored at or after ``first``, within the
    window after ``last``; in-order traffic has none). Only scores appended before ``mark``."""
    lo, hi = to_micros(first), to_micros(last) + st.store.colleague_window_us
    q = st.store.q
    out: list[tuple[str, pd.Timestamp]] = []
    with st.store.read() as conn:
        own = q.latest_score_key.first(conn, lead_id=lead_id)
        if own is not None and own[0] > to_micros(as_of) and _predates(mark, own[1]):
            out.append((lead_id, from_micros(int(own[0]))))
        account_id = _account_of(st, conn, lead_id)
        if account_id is not None:
            rows = q.colleague_latest_scores.all(conn, account_id=account_id, lead_id=lead_id)
            out += [(str(cid), from_micros(int(at))) for cid, at, sid in rows if lo <= at <= hi and _predates(mark, sid)]
    return out


def rescore_after_ingest(st: ServingState, per_lead: dict[str, list[tuple[pd.Timestamp, bool]]]) -> list[ScoreResult]:
    """One answered score per lead, at the latest activity time of this request; then every stored
    score the new activities made stale is refreshed.

    The answer is the score at the time the activity happened. A late activity (older than the lead's
    newest score) also refreshes that newest score, and those of the colleagues it counts for, so
    ``GET /leads/{id}`` reflects everything known. Retries of stored activities are answered but not
    re-audited.
    """
    mark = score_mark(st) if any(new for items in per_lead.values() for _, new in items) else None
    results: list[ScoreResult] = []
    refreshed: set[tuple[str, int]] = set()
    for lead_id, items in per_lead.items():
        as_of = max(t for t, _ in items)
        new_times = [t for t, new in items if new]
        if not new_times:
            with st.store.read() as conn:
                results.append(score_with_fingerprint(st, conn, lead_id, as_of)[0])
            continue
        results.append(append_fresh(st, lead_id, as_of))
        refreshed.add((lead_id, to_micros(as_of)))
        for who, at in stale_scores(st, lead_id, min(new_times), max(new_times), as_of, mark):
            if (who, to_micros(at)) not in refreshed:
                refreshed.add((who, to_micros(at)))
                append_fresh(st, who, at)
    return results
