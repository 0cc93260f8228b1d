"""Stale scores, marked durably and rescored in the background: the ``stale_marks`` queue and its worker.

A request answers with its own lead's score and never rescores anyone else (why:
:mod:`leadscore.serving.rescore`). What it made stale is written to ``stale_marks``
(:data:`~leadscore.serving.store_tables.stale_t`) *in the transaction that made it stale*, so a
``kill -9`` right after the commit loses no mark:

* :func:`mark_late` runs in the ingest transaction: new activities older than a score already stored
  for their lead, or for a colleague within the account window after them, mark their lead (with
  ``colleagues`` set when the account is concerned);
* :func:`mark_own` runs in a score's append transaction when a concurrent write moved what the score
  read (:func:`~leadscore.serving.rescore.still_current`).

:class:`StaleWorker` (one thread per worker process, started and stopped with the service) drains the
queue in two steps, both safe to run in several processes at once:

1. **expand**, coalesced per account: the account's ``colleagues`` marks become one own-lead mark per
   lead whose latest score (appended before the mark) counts the new activities; one query per
   account, however many marks it had;
2. **refresh**, at most ``batch_size`` leads per round: rescore the lead's latest score from the
   stored history at its moment, append it and, in the same transaction, check it is current; if so
   the mark is deleted *only if its token is still the one read* (a mark made meanwhile survives);
   if not, the lead is marked again.

Marks left by a crash are simply found at the next start. Tests and benchmarks wait for the queue
to drain with :meth:`StaleWorker.wait_drained` (in process) or ``GET /ready``'s ``stale_leads``
(the number of marked leads, 0 when every latest score is fresh).
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from leadscore.serving.queries import Compiled
from leadscore.serving.store_tables import leads_t, scores_t, stale_t, to_micros

if TYPE_CHECKING:
    from leadscore.serving.state import ServingState

log = logging.getLogger("leadscore.serving")

#: leads rescored per round before the worker looks at the queue again (new colleague marks first)
BATCH_SIZE = 32
#: how often the worker looks for marks written by other processes when nothing woke it
POLL_SECONDS = 1.0
#: marks read per round (expansion is one query per account, so this bounds a round's reads)
READ_LIMIT = 512


@dataclass(frozen=True)
class Mark:
    """One row of ``stale_marks``."""

    lead_id: str
    account_id: str | None
    since: int
    until: int
    score_mark: int
    colleagues: bool
    token: int


class StaleStatements:
    """The queue's statements, compiled once for the store's dialect."""

    def __init__(self, dialect: sa.Dialect) -> None:
        b, s, le, sc = sa.bindparam, stale_t, leads_t, scores_t

        def c(stmt: sa.ClauseElement) -> Compiled:
            return Compiled(stmt, dialect)

        cols = [s.c[n] for n in Mark.__dataclass_fields__]
        self.read = c(sa.select(*cols).where(s.c.colleagues == b("colleagues"))
                      .order_by(s.c.account_id, s.c.lead_id).limit(b("limit")))
        self.count = c(sa.select(sa.func.count()).select_from(s))
        self.clear = c(s.delete().where(s.c.lead_id == b("lead_id"), s.c.token == b("token")))
        self.max_score_id = c(sa.select(sa.func.coalesce(sa.func.max(sc.c.id), 0)))
        self.own_latest = c(sa.select(sc.c.scored_at, sc.c.id).where(sc.c.lead_id == b("lead_id"))
                            .order_by(sc.c.scored_at.desc(), sc.c.id.desc()).limit(1))
        # the latest score of every lead of the account: (lead, scored_at, id)
        s2 = sc.alias("s2")
        latest_id = (sa.select(s2.c.id).where(s2.c.lead_id == le.c.lead_id)
                     .order_by(s2.c.scored_at.desc(), s2.c.id.desc()).limit(1).scalar_subquery())
        self.account_latest = c(sa.select(le.c.lead_id, sc.c.scored_at, sc.c.id)
                                .select_from(le.join(sc, sc.c.id == latest_id))
                                .where(le.c.account_id == b("account_id")))
        # the ingest's late check in one statement, inside its write transaction: the lead's account as stored
        # now, its newest scored moment, and whether a lead of that account has a score in ``[lo, hi]``
        other, sc2 = le.alias("other"), sc.alias("sc2")
        self.late = c(sa.select(
            le.c.account_id,
            sa.select(sa.func.max(sc.c.scored_at)).where(sc.c.lead_id == le.c.lead_id).scalar_subquery(),
            sa.exists(sa.select(sa.literal(1)).select_from(other.join(sc2, sc2.c.lead_id == other.c.lead_id))
                      .where(other.c.account_id == le.c.account_id, sc2.c.scored_at >= b("lo"),
                             sc2.c.scored_at <= b("hi"))),
        ).where(le.c.lead_id == b("lead_id")))
        self.upsert: Compiled | None = None
        if dialect.name in ("sqlite", "postgresql"):
            if dialect.name == "sqlite":
                from sqlalchemy.dialects.sqlite import insert as dialect_insert
            else:
                from sqlalchemy.dialects.postgresql import insert as dialect_insert  # type: ignore[assignment]
            ins = dialect_insert(s).values({n: b(n) for n in Mark.__dataclass_fields__})
            x = ins.excluded
            self.upsert = c(ins.on_conflict_do_update(index_elements=[s.c.lead_id], set_={
                "account_id": x.account_id,
                "since": sa.case((s.c.since < x.since, s.c.since), else_=x.since),
                "until": sa.case((s.c.until > x.until, s.c.until), else_=x.until),
                "score_mark": sa.case((s.c.score_mark > x.score_mark, s.c.score_mark), else_=x.score_mark),
                "colleagues": sa.or_(s.c.colleagues, x.colleagues),
                "token": x.token,
            }))
        self.select_one = c(sa.select(*cols).where(s.c.lead_id == b("lead_id")))
        self.update_one = c(s.update().where(s.c.lead_id == b("lead_id")).values(
            {n: b(n) for n in Mark.__dataclass_fields__ if n != "lead_id"}))
        self.insert_one = c(s.insert().values({n: b(n) for n in Mark.__dataclass_fields__}))


_statements: dict[str, StaleStatements] = {}


def statements(st: ServingState) -> StaleStatements:
    """The queue's statements for this store (compiled on first use, once per dialect)."""
    name = st.store.dialect
    if name not in _statements:
        _statements[name] = StaleStatements(st.store.engine.dialect)
    return _statements[name]


def upsert_mark(st: ServingState, conn: Connection, mark: Mark) -> None:
    """Add a mark, merged with the lead's existing one (widest window, newest score mark, new token)."""
    q = statements(st)
    row = {n: getattr(mark, n) for n in Mark.__dataclass_fields__}
    if q.upsert is not None:
        q.upsert.run(conn, **row)
        return
    old = q.select_one.first(conn, lead_id=mark.lead_id)
    if old is None:
        q.insert_one.run(conn, **row)
        return
    o = Mark(*old)
    q.update_one.run(conn, lead_id=mark.lead_id, account_id=mark.account_id, since=min(o.since, mark.since),
                     until=max(o.until, mark.until), score_mark=max(o.score_mark, mark.score_mark),
                     colleagues=bool(o.colleagues or mark.colleagues), token=mark.token)


def new_mark(lead_id: str, account_id: str | None, since: int, until: int, score_mark: int,
             colleagues: bool) -> Mark:
    return Mark(lead_id, account_id, since, until, score_mark, colleagues, secrets.randbits(62))


def max_score_id(st: ServingState, conn: Connection) -> int:
    return int(statements(st).max_score_id.first(conn)[0])  # type: ignore[index]


def mark_late(st: ServingState, conn: Connection, lead_id: str, first: pd.Timestamp, last: pd.Timestamp) -> bool:
    """In the ingest transaction: mark ``lead_id`` if its new activities at ``[first, last]`` are late.

    Late means a score is already stored at or after ``first`` for the lead itself, or for a lead of
    its account within the account window after ``last`` (in-order traffic has none, so it writes
    nothing). The mark records the newest score id now: scores appended after this commit were
    computed or checked (:func:`~leadscore.serving.rescore.still_current`) against a history that
    holds these activities. Returns whether a mark was written.

    One statement reads the lead's account, own latest score and the account's scores in the window
    (:attr:`StaleStatements.late`), after the activities' insert, so SQLite's write lock already orders
    it with every other writer.
    """
    q = statements(st)
    lo, hi = to_micros(first), to_micros(last)
    row = q.late.first(conn, lead_id=lead_id, lo=lo, hi=hi + st.store.colleague_window_us)
    if row is None:  # no such lead (nothing stored it): nothing scored either
        return False
    account_id, own_latest, colleagues = row[0], row[1], bool(row[2])
    own_late = own_latest is not None and int(own_latest) >= lo
    if not (own_late or colleagues):
        return False
    upsert_mark(st, conn, new_mark(lead_id, account_id, lo, hi, max_score_id(st, conn), colleagues))
    return True


def serialize(st: ServingState, conn: Connection, accounts: Mapping[str, str | None]) -> None:
    """Make this write transaction wait for any other that checks or marks the same accounts.

    A score's check (:func:`~leadscore.serving.rescore.still_current`) and a late activity's mark
    (:func:`mark_late`) must not both pass unseen: the check must see the activity, or the mark must
    see the score. SQLite's single writer already orders them. PostgreSQL under READ COMMITTED does
    not (a checked score held at its commit let a late activity commit, mark nothing, and the stale
    score become the latest): a transaction-scoped advisory lock per account (per lead without one),
    taken in sorted order so two transactions cannot wait on each other, orders them the same way.
    """
    if st.store.dialect != "postgresql":
        return
    names = sorted({f"account:{a}" if a is not None else f"lead:{lead}" for lead, a in accounts.items()})
    for name in names:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": name})


def serialize_leads(st: ServingState, conn: Connection, lead_ids: Iterable[str]) -> None:
    """:func:`serialize` for leads whose accounts are not at hand: looked up only where a lock is taken
    (PostgreSQL), not a query per write transaction for nothing on SQLite."""
    if st.store.dialect != "postgresql":
        return
    from leadscore.serving.rescore import account_of

    serialize(st, conn, {lead_id: account_of(st, conn, lead_id) for lead_id in lead_ids})


def mark_own(st: ServingState, conn: Connection, lead_id: str, at: pd.Timestamp) -> None:
    """In a score's append transaction: the score just appended at ``at`` missed a concurrent write."""
    cut = to_micros(at)
    upsert_mark(st, conn, new_mark(lead_id, None, cut, cut, max_score_id(st, conn), False))


def pending(st: ServingState) -> int:
    """Leads marked stale now (0: every latest score is the score of the stored history)."""
    with st.store.read() as conn:
        return int(statements(st).count.first(conn)[0])  # type: ignore[index]


def _read(st: ServingState, colleagues: bool, limit: int) -> list[Mark]:
    with st.store.read() as conn:
        rows = statements(st).read.all(conn, colleagues=colleagues, limit=limit)
    return [Mark(str(r[0]), r[1], int(r[2]), int(r[3]), int(r[4]), bool(r[5]), int(r[6])) for r in rows]


def candidates(st: ServingState, account_id: str, marks: Iterable[Mark]) -> dict[str, tuple[int, int]]:
    """Per lead of the account, ``(scored_at, id)`` of its latest score if one of ``marks`` made it stale.

    Stale: appended before the mark (id up to ``score_mark``) and counting the new activities (the
    marked lead's own at or after ``since``; a colleague's within the account window after them).
    """
    window = st.store.colleague_window_us
    with st.store.read() as conn:
        latest = statements(st).account_latest.all(conn, account_id=account_id)
    out: dict[str, tuple[int, int]] = {}
    for m in marks:
        for lead, at, sid in latest:
            if sid > m.score_mark or at < m.since:
                continue
            if lead == m.lead_id or at <= m.until + window:
                out[str(lead)] = (int(at), int(sid))
    return out


def expand(st: ServingState, marks: list[Mark]) -> int:
    """Colleague marks → own-lead marks of the leads they made stale, one query per account.

    The colleague marks are cleared (compare-and-clear) in the transaction that writes the own-lead
    marks; a colleague mark made meanwhile stays and is expanded again. Returns the own-lead marks."""
    by_account: dict[str, list[Mark]] = defaultdict(list)
    for m in marks:
        by_account[m.account_id or ""].append(m)
    written = 0
    q = statements(st)
    for account_id, group in by_account.items():
        found = candidates(st, account_id, group) if account_id else {}
        with st.store.begin() as conn:
            for m in group:
                q.clear.run(conn, lead_id=m.lead_id, token=m.token)
                if not account_id:  # no account (left it meanwhile): the lead itself
                    upsert_mark(st, conn, new_mark(m.lead_id, None, m.since, m.until, m.score_mark, False))
            for lead, (at, sid) in found.items():
                upsert_mark(st, conn, new_mark(lead, account_id, at, at, sid, False))
        written += len(found)
    return written


def refresh(st: ServingState, m: Mark) -> bool:
    """Rescore the lead's latest score if ``m`` made it stale; clear ``m`` if the result is current.

    Returns whether the mark was cleared (a mark made meanwhile, or a score that a concurrent write
    moved again, leaves the lead marked)."""
    from leadscore.serving.rescore import score_with_fingerprint, still_current, stored_score

    q = statements(st)
    with st.store.read() as conn:
        own = q.own_latest.first(conn, lead_id=m.lead_id)
        stale = own is not None and int(own[1]) <= m.score_mark and int(own[0]) >= m.since
        if stale:
            at = pd.Timestamp(int(own[0]), unit="us", tz="UTC")  # type: ignore[index]
            result, since, seen = score_with_fingerprint(st, conn, m.lead_id, at)
    with st.store.begin() as conn:
        if not stale:
            return q.clear.run(conn, lead_id=m.lead_id, token=m.token) == 1
        serialize_leads(st, conn, [m.lead_id])
        st.store.append_score(conn, stored_score(result, since))
        if not still_current(st, conn, m.lead_id, at, seen):
            mark_own(st, conn, m.lead_id, at)
            return False
        return q.clear.run(conn, lead_id=m.lead_id, token=m.token) == 1


def drain_round(st: ServingState, batch_size: int = BATCH_SIZE) -> int:
    """One round: expand every colleague mark read, then refresh up to ``batch_size`` leads.

    Returns the work done (marks expanded plus leads refreshed; 0 when the queue is empty)."""
    work = 0
    wide = _read(st, True, READ_LIMIT)
    if wide:
        expand(st, wide)
        work += len(wide)
    for m in _read(st, False, batch_size):
        with st.scoring_slots:  # takes turns with the requests (serving.state.SCORING_CONCURRENCY)
            refresh(st, m)
        work += 1
    return work


def drain(st: ServingState, max_rounds: int = 10_000) -> int:
    """Drain the queue in the calling thread (tests, tools); returns the marks left (0 when drained)."""
    for _ in range(max_rounds):
        if drain_round(st) == 0:
            break
    return pending(st)


class StaleWorker:
    """The background thread that drains ``stale_marks`` for one worker process.

    Woken by this process's requests when they mark a lead (:meth:`wake`), and every
    ``poll_seconds`` for marks written by other processes or left by a crash. A failing round (a
    busy or vanished database) is logged and retried at the next poll; marks stay until cleared.
    """

    def __init__(self, st: ServingState, batch_size: int = BATCH_SIZE, poll_seconds: float = POLL_SECONDS) -> None:
        self.st = st
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Condition()
        self._busy = False
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the thread (idempotent); it first drains whatever a previous run left."""
        if self.running:
            return
        self._stop.clear()
        self._wake.set()
        self._thread = threading.Thread(target=self._loop, name="stale-scores", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the round in progress (marks not done stay in the store for the next start)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def wake(self) -> None:
        self._wake.set()

    def wait_drained(self, timeout: float = 60.0) -> bool:
        """Wait until the queue is empty and no round is running; False on timeout. Without a running
        thread (a test's state, never started), drains in the calling thread instead."""
        import time

        if not self.running:
            return drain(self.st) == 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.wake()
            with self._idle:
                self._idle.wait_for(lambda: not self._busy, timeout=max(0.0, deadline - time.monotonic()))
            if pending(self.st) == 0:
                return True
            self._stop.wait(0.05)
        return False

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.poll_seconds)
            self._wake.clear()
            with self._idle:
                self._busy = True
            try:
                while not self._stop.is_set() and drain_round(self.st, self.batch_size) > 0:
                    pass
            except Exception:  # the store is busy or gone for a moment: the marks stay, retried later
                log.exception("rescoring stale leads failed; retrying in %.0f s", self.poll_seconds)
            finally:
                with self._idle:
                    self._busy = False
                    self._idle.notify_all()


def status(st: ServingState) -> Mapping[str, Any]:
    """What ``GET /ready`` reports about the queue."""
    worker = st.stale_worker
    return {"stale_leads": pending(st), "stale_worker": worker is not None and worker.running}
