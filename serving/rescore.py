"""Fresh scores: the request scores its own lead once; whatever else it made stale is marked and rescored in the background.

Two ways a latest score goes stale:

* **Colleagues of a late activity.** A lead's features count its account colleagues' activities of the
  last 30 days (``account_other_leads_*_30d``). An activity that arrives late (older than the newest
  scores) changes those roll-ups for every colleague whose latest score lies within 30 days after it.
* **Concurrent requests.** A request scores from a read of the history, then appends the score. If
  another request commits an activity in between, the appended score misses it.

What is done: **mark stale in the write transaction, rescore in the background**
(:mod:`leadscore.serving.stale`), not in the request. The request appends its lead's score and checks
in the same transaction whether a concurrent write moved what it read (:func:`still_current`); if so
the lead is marked stale there, instead of being scored again. The ingest transaction marks a lead
whose new activities are late (:func:`~leadscore.serving.stale.mark_late`), for itself and its account.
The service's worker thread rescores marked leads from the stored history and clears each mark only
when the appended score is current.

Why not in the request, as before: the cost of the in-request design grew with load. Each appended
score was checked and, if something newer had committed, rolled back and scored again (up to 5 tries),
and a late activity rescored every colleague it counted for before answering. On the soak benchmark
(40 req/s of ``POST /activities``, one account holding ~27 % of the leads, a 2-core machine) the
big account's requests conflicted with each other more the further the server fell behind: every
retry made the queue longer, which made the next conflict likelier, and requests that arrived late
rescored hundreds of colleagues in-line (17-20 s). Minute 1 answered 782 requests at p50 3.6 s and
p99 46.5 s, minute 2 163, minute 3 96, RSS 1488 → 1735 MB. With marks, a request does one score and
one append whatever the load (the check reads only the rows committed since it read the history; at
most ``SCORING_CONCURRENCY`` = 2 scorings run at once per process, see :mod:`serving.state`), and the
rescoring is bounded per round and coalesced per account (one query per account finds the stale
colleagues of all its marks), off the request path. Measured on the same benchmark, same shared
machine (load average ~11 on 2 cores from other work, so the server process got ~40 % of a core):
at 40 req/s the server no longer collapses, it answers 1,202, 1,302 and 1,732 requests in minutes
1-3 (rising as it warms, at a steady ~20 ms of server CPU per answer) though it cannot keep up with
40 req/s on that share of a core; at 12 req/s for 10 minutes, p99 188-1,042 ms from minute 3 on,
0 server errors, tree RSS 852 → 863 MB (+1.3 %), and the queue empty 0.1 s after the load stops.
What it costs: ``GET /leads/{id}`` of a colleague can show a stale latest score until the worker
gets to it (normally well under a second; ``GET /ready`` reports ``stale_leads``), and the queue is
a table (``stale_marks``) rather than memory, so marks survive ``kill -9`` (they are committed with
the write that made them) and any replica's worker can drain them.

On SQLite "committed since the read" is a rowid mark (rowids are handed out in commit order, see
:mod:`serving.cache`): the activity cache's, at which it handed out the history, or without the cache
one read before the history. So the check reads only the few rows committed meanwhile
and holds the write lock for well under a millisecond. Elsewhere the rows the score read are counted
again (activities are insert-only, so equal counts mean equal rows). PostgreSQL runs that check under
READ COMMITTED, which alone leaves a window (a late activity committing while a checked score waits at
its commit: neither sees the other); :func:`~leadscore.serving.stale.serialize` closes it with a
per-account advisory lock taken by the ingest, append and refresh transactions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd
from sqlalchemy.engine import Connection

from leadscore.serving.scoring import ScoreResult
from leadscore.serving.store import StoredScore, to_micros

if TYPE_CHECKING:
    from leadscore.serving.state import ServingState

#: what a score was computed from: (rowid mark before the read on SQLite, else the activities read;
#: the stage it started from and since when)
Fingerprint = tuple[int, tuple[str | None, pd.Timestamp | None]]


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
        band=r.band,
    )


def score_with_fingerprint(
    st: ServingState, conn: Connection, lead_id: str, as_of: pd.Timestamp
) -> tuple[ScoreResult, pd.Timestamp, Fingerprint]:
    """Score a stored lead at ``as_of`` from exactly the history known up to then.

    Also returns since when the lead holds the resulting stage (for recycling and the audit) and
    what the score was computed from (to check it is still current when it is appended).
    """
    store = st.store
    if store.cache is None and store.q.activity_mark is not None:
        # no cache on SQLite: the rowid mark, read before the history
        mark = int(store.q.activity_mark.first(conn)[0])  # type: ignore[index]
        history = store.load_lead(conn, lead_id, as_of, st.settings)
    else:  # the cache's mark at its read (SQLite), or the activities read (elsewhere)
        history, mark = store.load_lead_marked(conn, lead_id, as_of, st.settings)
    previous, since = store.current_stage(conn, lead_id, as_of)
    days = None if since is None else max((as_of - since).total_seconds(), 0.0) / 86400.0
    result = st.scorer.score(history, lead_id, as_of, previous, days_in_stage=days)
    stage_since = since if (since is not None and result.stage == previous) else as_of
    return result, stage_since, (mark, (previous, since))


def still_current(st: ServingState, conn: Connection, lead_id: str, as_of: pd.Timestamp, seen: Fingerprint) -> bool:
    """Whether a score computed from ``seen`` is still the score of what ``conn`` sees now."""
    if st.store.current_stage(conn, lead_id, as_of) != seen[1]:
        return False
    q, cut = st.store.q, to_micros(as_of)
    if q.activities_since_mark is not None:
        since_read = q.activities_since_mark.all(conn, mark=seen[0])
        if not since_read:  # the common case: nothing committed meanwhile, no account to look up
            return True
        account_id = account_of(st, conn, lead_id)
        for who, at, account in since_read:
            if at <= cut and (who == lead_id or (account_id is not None and account == account_id
                                                 and at > cut - st.store.colleague_window_us)):
                return False
        return True
    account_id = account_of(st, conn, lead_id)
    n = int(q.count_own_activities.first(conn, lead_id=lead_id, cut=cut)[0])  # type: ignore[index]
    if account_id is not None:
        n += int(q.count_colleague_activities.first(  # type: ignore[index]
            conn, account_id=account_id, lead_id=lead_id, since=cut - st.store.colleague_window_us, cut=cut)[0])
    return n == seen[0]


def account_of(st: ServingState, conn: Connection, lead_id: str) -> Any:
    """The lead's account id as stored (None: no account, or no such lead)."""
    q = st.store.q
    row = q.lead.first(conn, lead_id=lead_id)
    return None if row is None else row[q.lead_columns.index("account_id")]


def append_checked(st: ServingState, conn: Connection, lead_id: str, as_of: pd.Timestamp) -> ScoreResult:
    """Score the lead at ``as_of`` and append it; if a concurrent write moved what it read, mark the lead
    stale in the same transaction (the background worker rescores it) rather than scoring again.

    ``conn`` is the request's connection, outside any transaction: the reads and the model run outside
    the write lock, the append and its check in a write transaction of their own."""
    from leadscore.serving.stale import mark_own, serialize_leads

    result, since, seen = score_with_fingerprint(st, conn, lead_id, as_of)
    with st.store.write(conn):
        serialize_leads(st, conn, [lead_id])
        st.store.append_score(conn, stored_score(result, since))
        moved = not still_current(st, conn, lead_id, as_of, seen)
        if moved:
            mark_own(st, conn, lead_id, as_of)
    if moved:
        st.wake_stale_worker()
    return result


def rescore_after_ingest(st: ServingState, conn: Connection,
                         per_lead: dict[str, list[tuple[pd.Timestamp, bool]]]) -> list[ScoreResult]:
    """One answered score per lead, at the latest activity time of this request.

    The answer is the score at the time the activity happened. Stored scores that the new activities
    made stale (a late activity's lead and colleagues) were marked by the ingest transaction and are
    refreshed by the background worker. Retries of stored activities are answered but not re-audited.
    """
    results: list[ScoreResult] = []
    for lead_id, items in per_lead.items():
        as_of = max(t for t, _ in items)
        if not any(new for _, new in items):
            results.append(score_with_fingerprint(st, conn, lead_id, as_of)[0])
            continue
        results.append(append_checked(st, conn, lead_id, as_of))
    return results
