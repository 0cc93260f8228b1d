"""The event store: what the CRM told us, kept so that every lead can be re-scored from its history.

SQLAlchemy 2 Core over any database URL; a SQLite file (WAL mode) by default and PostgreSQL in
production. The tables (:mod:`leadscore.serving.store_tables`) mirror the five CRM tables
(ARCHITECTURE §1) plus ``scores``, the audit trail of every score we answered with and the model
version that produced it. Opening a store migrates it to the current schema
(:mod:`leadscore.serving.migrate`). The scoring path's statements are in
:mod:`leadscore.serving.queries`, its read (a lead's feature-kernel arrays) in
:mod:`leadscore.serving.lead_read`, the bulk import's conversion of frames to rows in
:mod:`leadscore.serving.frames`.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from leadscore.history import CRMHistory
from leadscore.serving import store_checks
from leadscore.serving.frames import empty_frame, frame_rows, rows_frame
from leadscore.serving.lead_read import read_lead, read_lead_marked
from leadscore.serving.members import account_versions_t  # noqa: F401 - its table joins the metadata
from leadscore.serving.migrate import upgrade_store
from leadscore.serving.queries import Compiled, Statements
from leadscore.serving.store_tables import (
    CRM_TABLES,
    accounts_t,
    activities_t,
    from_micros,
    leads_t,
    scores_t,
    stage_changes_t,
    to_micros,
)

if TYPE_CHECKING:
    from leadscore.config import Settings
    from leadscore.features.online import LeadArrays
    from leadscore.serving.cache import ActivityCache

#: what other modules import from here (``_rows_frame`` is the old name of ``frames.rows_frame``)
__all__ = ["ACCOUNT_WINDOW_DAYS", "EventStore", "StoredScore", "_rows_frame", "empty_frame", "from_micros",
           "leads_t", "to_micros"]
_rows_frame = rows_frame

log = logging.getLogger("leadscore.serving")

#: The account roll-ups' window by default (``features.account_window_days``).
ACCOUNT_WINDOW_DAYS = 30
DAY_US = 86_400_000_000


@dataclass(frozen=True)
class StoredScore:
    """One row of the score audit trail."""

    lead_id: str
    scored_at: pd.Timestamp
    computed_at: pd.Timestamp
    p_sql: float
    p_opportunity: float
    stage: str
    previous_stage: str | None
    model_version: str
    reasons: dict[str, list[str]]
    #: when the lead entered ``stage`` (carried over while the stage does not change)
    stage_since: pd.Timestamp
    #: fit/engagement band (A-C × 1-3); None for scores written before bands existed
    band: str | None = None



class EventStore:
    """Idempotent storage of CRM events and score history behind one SQLAlchemy engine.

    Every write method commits before it returns, so an HTTP answer sent after it never reports an
    event that a crash could lose.
    """

    def __init__(self, url: str, cache_rows: int = 0, checkpoint_seconds: float = 0.0,
                 account_window_days: int = ACCOUNT_WINDOW_DAYS) -> None:
        """``cache_rows`` > 0 keeps up to that many activities in memory for scoring reads (SQLite only;
        see :mod:`serving.cache`); 0 reads every history from SQL.

        ``checkpoint_seconds`` > 0 (SQLite): a background thread copies the write-ahead log into the
        database file that often, instead of the commit that happens to cross SQLite's 1000-page mark
        doing it (20-30 ms, an fsync included, once every ~200 scored activities). Commits stay exactly
        as durable; a commit still checkpoints by itself past 10000 pages, should the thread fall behind.
        """
        self.url = url
        #: how far back colleagues' activities are read for a lead's account roll-ups: the features'
        #: window (``features.account_window_days``, passed by the service) plus one day of margin
        #: (extra rows never change a feature; missing ones would, so the read refuses a longer window)
        self.colleague_window_us = (account_window_days + 1) * DAY_US
        connect_args: dict[str, Any] = {}
        if url.startswith("sqlite"):
            connect_args = {"check_same_thread": False, "timeout": 30}
        # LIFO: the connection a request returns is the next one handed out, so a request finds the pages
        # it reads in the connection's own cache (each SQLite connection caches its own pages, and drops
        # them only when another connection wrote) rather than rotating through the pool's idle ones
        self.engine: Engine = sa.create_engine(url, connect_args=connect_args, pool_pre_ping=False,
                                               pool_use_lifo=True)
        self.dialect = self.engine.dialect.name
        if self.dialect == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
            if checkpoint_seconds > 0:
                sa.event.listen(self.engine, "connect", _late_autocheckpoint)
        try:
            self.revision = store_checks.open_checked(self.engine, upgrade_store)
        except BaseException:
            self.engine.dispose()
            raise
        self.q = Statements(self.engine.dialect)
        self._previous_scores = Compiled(_previous_scores_stmt(), self.engine.dialect)
        self._write_lock = threading.RLock()
        self.cache: ActivityCache | None = None
        if cache_rows > 0 and self.dialect == "sqlite":
            from leadscore.serving.cache import ActivityCache

            self.cache = ActivityCache(cache_rows)
        self._stop = threading.Event()
        self._checkpointer: threading.Thread | None = None
        if checkpoint_seconds > 0 and self.dialect == "sqlite" and self.engine.url.database not in (None, "", ":memory:"):
            self._checkpointer = threading.Thread(target=self._checkpoint_loop, args=(checkpoint_seconds,),
                                                  name="wal-checkpoint", daemon=True)
            self._checkpointer.start()

    @property
    def where(self) -> str:
        """The store as a person finds it: the SQLite file, else the URL without its password."""
        return store_checks.where(self.engine)

    def verify(self) -> None:
        """Refuse a damaged or truncated SQLite file (:func:`serving.store_checks.verify`)."""
        store_checks.verify(self.engine)

    def close(self) -> None:
        self._stop.set()
        if self._checkpointer is not None:
            self._checkpointer.join(timeout=10)
        self.engine.dispose()

    def _checkpoint_loop(self, every: float) -> None:
        """PASSIVE checkpoints: never wait for or block readers and writers (they copy what they can)."""
        while not self._stop.wait(every):
            try:
                with self.engine.connect() as conn:
                    cur = conn.connection.cursor()
                    cur.execute("PRAGMA wal_checkpoint(PASSIVE)")
                    cur.fetchall()
                    cur.close()
            except Exception as exc:  # a busy or vanished database: try again next time
                log.debug("WAL checkpoint failed: %s", exc)

    def warm_cache(self) -> int:
        """Load the activity cache with the accounts of the most recently active leads, up to half
        its size; returns the rows loaded (0 without a cache)."""
        if self.cache is None:
            return 0
        with self.engine.connect() as conn:
            return self.cache.warm(conn.connection, self.cache.max_rows // 2)

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A write transaction, committed on exit.

        Writers of this process take turns on a lock first: SQLite lets one writer in at a time, and a
        thread that finds the database locked waits in SQLite's busy handler, which sleeps 1, 2, 5,
        10 ms... between tries; a lock hands over at once. (Other processes still meet the busy handler.)
        """
        with self._write_lock, self.engine.begin() as conn:
            yield conn

    @contextmanager
    def write(self, conn: Connection) -> Iterator[Connection]:
        """:meth:`begin` on a connection the caller holds: a request that stores, reads, scores and appends
        checks one connection out of the pool for all of it (each checkout and its reset on return is
        ~0.1 ms) and commits each of its write transactions here, before going on."""
        with self._write_lock, conn.begin():
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reads (no write lock taken; each statement sees what is committed)."""
        with self.engine.connect() as conn:
            yield conn

    # ------------------------------------------------------------------ writes

    def _insert_ignore(self, conn: Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> int:
        """Insert rows whose key is not there yet; returns how many were new."""
        if not rows:
            return 0
        if self.dialect in ("sqlite", "postgresql"):
            if self.dialect == "sqlite":
                from sqlalchemy.dialects.sqlite import insert as dialect_insert
            else:
                from sqlalchemy.dialects.postgresql import insert as dialect_insert  # type: ignore[assignment]
            stmt = dialect_insert(table).on_conflict_do_nothing()
            result = conn.execute(stmt, list(rows))
            return _count(result)
        key_cols = [c for c in table.primary_key.columns]
        new = 0
        for row in rows:
            cond = sa.and_(*[c == row[c.name] for c in key_cols])
            if conn.execute(sa.select(sa.literal(1)).select_from(table).where(cond)).first() is None:
                conn.execute(table.insert().values(**row))
                new += 1
        return new

    def add_activities(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> list[bool]:
        """Store activities keyed by ``activity_id``; returns, per row, whether it was new.

        Row-by-row so the caller learns which ids were duplicates (a duplicate is not an error: the
        CRM retries, and the same activity twice must count once).
        """
        insert = self.q.insert_activity
        if insert is not None:
            return [insert.run(conn, **row) == 1 for row in rows]
        return [self._insert_ignore(conn, activities_t, [row]) == 1 for row in rows]

    def upsert_lead(self, conn: Connection, lead_id: str, props: Mapping[str, Any], seen_at: pd.Timestamp) -> None:
        """Create the lead if new; fill the fields the CRM sent (fields not sent keep their value).

        ``created_at`` comes from the properties when sent; otherwise the earliest event seen stands
        in for it, so a lead never has activity before it exists.
        """
        self._upsert(conn, leads_t, "lead_id", lead_id, props, seen_at)

    def upsert_account(
        self, conn: Connection, account_id: str, props: Mapping[str, Any], seen_at: pd.Timestamp
    ) -> None:
        self._upsert(conn, accounts_t, "account_id", account_id, props, seen_at)

    def _upsert(
        self,
        conn: Connection,
        table: sa.Table,
        key: str,
        key_value: str,
        props: Mapping[str, Any],
        seen_at: pd.Timestamp,
    ) -> None:
        values = {k: v for k, v in props.items() if k in table.c and k != key and v is not None}
        explicit = "created_at" in values
        if explicit:
            values["created_at"] = to_micros(values["created_at"])
        seen = to_micros(seen_at)
        existing = self._row(conn, table, key_value)
        has_flag = "created_at_explicit" in table.c
        if existing is None:
            row = {key: key_value, "created_at": seen, **values}
            if has_flag:
                row["created_at_explicit"] = explicit
            if self._insert_ignore(conn, table, [row]) == 1:
                return
            # another request created it between our read and our insert: merge into theirs
            existing = self._row(conn, table, key_value)
            if existing is None:
                return
        update = dict(values)
        if not explicit and (not has_flag or not existing["created_at_explicit"]) and seen < existing["created_at"]:
            update["created_at"] = seen
        if explicit and has_flag:
            update["created_at_explicit"] = True
        if update:
            conn.execute(table.update().where(table.c[key] == key_value).values(**update))

    def _row(self, conn: Connection, table: sa.Table, key_value: str) -> dict[str, Any] | None:
        """The lead or account row by id, as a column -> value dict (booleans may be 0/1)."""
        q = self.q
        stmt, names = (q.lead, q.lead_columns) if table is leads_t else (q.account, q.account_columns)
        row = stmt.first(conn, **{names[0]: key_value})
        return None if row is None else dict(zip(names, row, strict=True))

    def add_stage_change(
        self, conn: Connection, lead_id: str, stage: str, changed_at: pd.Timestamp, set_by: str
    ) -> bool:
        row = {"lead_id": lead_id, "stage": stage, "changed_at": to_micros(changed_at), "set_by": set_by}
        return self._insert_ignore(conn, stage_changes_t, [row]) == 1

    def append_score(self, conn: Connection, score: StoredScore) -> None:
        self.q.insert_score.run(
            conn,
            lead_id=score.lead_id,
            scored_at=to_micros(score.scored_at),
            computed_at=to_micros(score.computed_at),
            p_sql=score.p_sql,
            p_opportunity=score.p_opportunity,
            stage=score.stage,
            previous_stage=score.previous_stage,
            stage_since=to_micros(score.stage_since),
            model_version=score.model_version,
            reasons=json.dumps(score.reasons),
            band=score.band,
        )

    def import_history(self, history: CRMHistory) -> dict[str, int]:
        """Bulk-load a validated CRM history (e.g. the generated demo CRM); idempotent by key.

        Returns the number of new rows per table.
        """
        counts: dict[str, int] = {}
        with self.begin() as conn:
            for name, (table, spec) in CRM_TABLES.items():
                rows = list(frame_rows(history.table(name), spec))
                if name == "leads":
                    for r in rows:
                        r["created_at_explicit"] = True
                if name == "activities":
                    received = to_micros(history.cutoff)
                    for r in rows:
                        r["received_at"] = received
                new = 0
                for start in range(0, len(rows), 5000):
                    new += self._insert_ignore(conn, table, rows[start : start + 5000])
                counts[name] = new
        return counts

    # ------------------------------------------------------------------ reads

    def lead_exists(self, conn: Connection, lead_id: str) -> bool:
        q = sa.select(sa.literal(1)).select_from(leads_t).where(leads_t.c.lead_id == lead_id)
        return conn.execute(q).first() is not None

    def count_activities(self, lead_id: str | None = None) -> int:
        q = sa.select(sa.func.count()).select_from(activities_t)
        if lead_id is not None:
            q = q.where(activities_t.c.lead_id == lead_id)
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar_one())

    def load_lead(self, conn: Connection, lead_id: str, as_of: pd.Timestamp, settings: Settings) -> LeadArrays:
        """What the features of ``(lead_id, as_of)`` read, up to ``as_of``, as the feature kernel's arrays
        (:func:`leadscore.serving.lead_read.read_lead`); ``KeyError`` for an unknown lead."""
        return read_lead(self, conn, lead_id, as_of, settings)

    def load_lead_marked(self, conn: Connection, lead_id: str, as_of: pd.Timestamp,
                         settings: Settings) -> tuple[LeadArrays, int]:
        """:meth:`load_lead` and what it was read at (:func:`leadscore.serving.lead_read.read_lead_marked`)."""
        return read_lead_marked(self, conn, lead_id, as_of, settings)

    def current_stage(
        self, conn: Connection, lead_id: str, before: pd.Timestamp | None = None
    ) -> tuple[str | None, pd.Timestamp | None]:
        """The lead's stage just before ``before`` and since when it holds.

        The later of our last score (strictly before, so a retry sees the same previous stage) and
        the CRM's last stage change (at or before): a stage set by sales overrides our earlier advice.
        """
        q = self.q
        if before is not None:  # the scoring path's form: one statement (it runs at every score and check)
            score = change = None
            for kind, stage, at, since in q.stage_before.all(conn, lead_id=lead_id, cut=to_micros(before)):
                if kind == 0:
                    score = (stage, at, since)
                else:
                    change = (stage, at)
        else:
            score = q.last_score.first(conn, lead_id=lead_id)
            change = q.last_change.first(conn, lead_id=lead_id)
        if score is not None and (change is None or score[1] >= change[1]):
            return str(score[0]), from_micros(int(score[2]))
        if change is not None:
            return str(change[0]), from_micros(int(change[1]))
        return None, None

    def latest_scored_at(self, conn: Connection, lead_id: str) -> pd.Timestamp | None:
        row = self.q.latest_scored_at.first(conn, lead_id=lead_id)
        value = None if row is None else row[0]
        return None if value is None else from_micros(int(value))

    def previous_scores(self, conn: Connection, lead_id: str, before: pd.Timestamp, n: int) -> list[tuple[Any, Any]]:
        """``(p_sql, reasons)`` of the lead's last ``n`` scored moments strictly before ``before``, newest
        first, the newest row of each moment: what the trend of one answer reads.

        One statement compiled once, walking the ``(lead_id, scored_at, id)`` index backwards from
        ``before``; the general form (:func:`leadscore.serving.trail.previous_scores`, many leads at once,
        a window function) costs ~2.5 ms per call to build, compile and plan, more than scoring the lead.
        """
        return self._previous_scores.all(conn, lead_id=lead_id, cut=to_micros(before), n=n)

    def score_history(self, lead_id: str, limit: int = 100) -> list[StoredScore]:
        """Newest first (by the moment scored, then by insertion)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(scores_t)
                .where(scores_t.c.lead_id == lead_id)
                .order_by(scores_t.c.scored_at.desc(), scores_t.c.id.desc())
                .limit(limit)
            ).mappings()
            return [
                StoredScore(
                    lead_id=r["lead_id"],
                    scored_at=from_micros(r["scored_at"]),
                    computed_at=from_micros(r["computed_at"]),
                    p_sql=float(r["p_sql"]),
                    p_opportunity=float(r["p_opportunity"]),
                    stage=r["stage"],
                    previous_stage=r["previous_stage"],
                    model_version=r["model_version"],
                    reasons=json.loads(r["reasons"]),
                    stage_since=from_micros(r["stage_since"]),
                    band=r["band"],
                )
                for r in rows
            ]

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(sa.select(sa.literal(1)))


def _previous_scores_stmt() -> sa.Select[Any]:
    """:meth:`EventStore.previous_scores`: per scored moment its newest row (max id), newest moments first.

    A derived table rather than ``IN (subquery ... LIMIT)``, which not every backend accepts."""
    b, sc = sa.bindparam, scores_t
    newest = (sa.select(sa.func.max(sc.c.id).label("id"))
              .where(sc.c.lead_id == b("lead_id"), sc.c.scored_at < b("cut"))
              .group_by(sc.c.scored_at).order_by(sc.c.scored_at.desc()).limit(b("n")).subquery("newest"))
    return (sa.select(sc.c.p_sql, sc.c.reasons).select_from(sc.join(newest, newest.c.id == sc.c.id))
            .order_by(sc.c.scored_at.desc()))


def _count(result: Any) -> int:
    rc = getattr(result, "rowcount", -1)
    return int(rc) if rc is not None and rc >= 0 else 0


def _late_autocheckpoint(dbapi_conn: Any, _record: Any) -> None:
    """With the background checkpointer: commits checkpoint by themselves only past 10000 pages."""
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA wal_autocheckpoint=10000")
    cur.close()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    """WAL lets readers run while a writer commits; NORMAL sync is durable across process crashes."""
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()

