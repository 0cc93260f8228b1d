"""The event store: what the CRM told us, kept so that every lead can be re-scored from its history.

SQLAlchemy 2 Core over any database URL; a SQLite file (WAL mode) by default and PostgreSQL in
production. The tables mirror the five CRM tables (ARCHITECTURE §1) plus ``scores``, the audit trail
of every score we answered with, and the model version that produced it.

Why timestamps are stored as integer microseconds since the epoch (UTC): SQLite has no time zone
type, and integers compare, index and convert to pandas ``datetime64[us, UTC]`` exactly and fast on
every backend, so the online history is bit-for-bit the history the batch pipeline sees.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from leadscore.history import CRMHistory, empty_table
from leadscore.tables import ACCOUNTS, ACTIVITIES, LEADS, OPPORTUNITIES, STAGE_CHANGES, TableSpec

if TYPE_CHECKING:
    from leadscore.serving.cache import ActivityCache, ActivityColumns

metadata = sa.MetaData()
log = logging.getLogger("leadscore.serving")


def _ts(name: str, nullable: bool = True) -> sa.Column[Any]:
    return sa.Column(name, sa.BigInteger, nullable=nullable)


accounts_t = sa.Table(
    "accounts",
    metadata,
    sa.Column("account_id", sa.String(128), primary_key=True),
    sa.Column("name", sa.Text),
    sa.Column("domain", sa.Text),
    sa.Column("industry", sa.Text),
    sa.Column("employees", sa.BigInteger),
    sa.Column("annual_revenue", sa.Float),
    sa.Column("country", sa.Text),
    _ts("created_at", nullable=False),
)

leads_t = sa.Table(
    "leads",
    metadata,
    sa.Column("lead_id", sa.String(128), primary_key=True),
    sa.Column("account_id", sa.String(128), index=True),
    sa.Column("email_domain", sa.Text),
    sa.Column("job_title", sa.Text),
    sa.Column("seniority", sa.Text),
    sa.Column("department", sa.Text),
    sa.Column("country", sa.Text),
    sa.Column("source", sa.Text),
    _ts("created_at", nullable=False),
    # True when created_at was sent by the CRM; False when we inferred it from the first event seen,
    # in which case an earlier (late-arriving) event moves it back.
    sa.Column("created_at_explicit", sa.Boolean, nullable=False, default=False),
)

activities_t = sa.Table(
    "activities",
    metadata,
    sa.Column("activity_id", sa.String(256), primary_key=True),
    sa.Column("lead_id", sa.String(128), nullable=False),
    _ts("occurred_at", nullable=False),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("properties", sa.Text),
    _ts("received_at", nullable=False),
    sa.Index("ix_activities_lead_time", "lead_id", "occurred_at"),
)

stage_changes_t = sa.Table(
    "stage_changes",
    metadata,
    sa.Column("lead_id", sa.String(128), nullable=False),
    sa.Column("stage", sa.String(32), nullable=False),
    _ts("changed_at", nullable=False),
    sa.Column("set_by", sa.String(16), nullable=False),
    sa.PrimaryKeyConstraint("lead_id", "changed_at", "stage"),
)

opportunities_t = sa.Table(
    "opportunities",
    metadata,
    sa.Column("opportunity_id", sa.String(128), primary_key=True),
    sa.Column("lead_id", sa.String(128), nullable=False, index=True),
    sa.Column("account_id", sa.String(128), index=True),
    _ts("created_at", nullable=False),
    sa.Column("stage", sa.Text),
    sa.Column("amount", sa.Float),
    _ts("closed_at"),
    sa.Column("is_won", sa.Boolean),
)

scores_t = sa.Table(
    "scores",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("lead_id", sa.String(128), nullable=False),
    _ts("scored_at", nullable=False),
    _ts("computed_at", nullable=False),
    sa.Column("p_sql", sa.Float, nullable=False),
    sa.Column("p_opportunity", sa.Float, nullable=False),
    sa.Column("stage", sa.String(32), nullable=False),
    sa.Column("previous_stage", sa.String(32)),
    _ts("stage_since", nullable=False),
    sa.Column("model_version", sa.String(64), nullable=False),
    sa.Column("reasons", sa.Text, nullable=False),
    sa.Index("ix_scores_lead_time", "lead_id", "scored_at", "id"),
)

#: Created on existing stores too (at open, if missing). Covering: an account's leads with their creation
#: times come from the index alone, without a table lookup per lead.
_LATER_INDEXES = [
    sa.Index("ix_leads_account_lead_created", leads_t.c.account_id, leads_t.c.lead_id, leads_t.c.created_at),
]

_TABLE_SPECS: dict[str, tuple[sa.Table, TableSpec]] = {
    "accounts": (accounts_t, ACCOUNTS),
    "leads": (leads_t, LEADS),
    "activities": (activities_t, ACTIVITIES),
    "stage_changes": (stage_changes_t, STAGE_CHANGES),
    "opportunities": (opportunities_t, OPPORTUNITIES),
}


#: How far back the colleagues' activities are loaded for a lead's account roll-ups. The feature kernel
#: counts them over the last 30 days (``account_other_leads_*_30d``); one day of margin, since extra
#: rows never change a feature and missing ones would.
ACCOUNT_WINDOW_DAYS = 31


def to_micros(ts: pd.Timestamp) -> int:
    """UTC timestamp → integer microseconds since the epoch (the stored form)."""
    t = pd.Timestamp(ts)
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    # ``Timestamp.value`` is nanoseconds whatever the unit.
    return int(t.value // 1000)


def from_micros(value: int) -> pd.Timestamp:
    return pd.Timestamp(value, unit="us", tz="UTC")


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


class _Compiled:
    """A parameterised statement compiled once for a dialect and run on the raw DBAPI cursor.

    Building and compiling a SQLAlchemy statement costs ~0.1-0.3 ms; a request runs about a dozen.
    Compiled once, each is a string the driver keeps prepared (sqlite3 caches statements by text).
    Rows come back as plain DBAPI tuples (no result processing: the columns read this way are
    integers, floats and strings on every backend; booleans may come back as 0/1).
    """

    def __init__(self, stmt: sa.ClauseElement, dialect: sa.Dialect) -> None:
        compiled: Any = stmt.compile(dialect=dialect)
        self.sql = str(compiled)
        self.names: list[str] | None = list(compiled.positiontup or ()) if compiled.positional else None
        # values bound at build time (e.g. LIMIT 1)
        self.fixed = {k: v for k, v in compiled.params.items() if v is not None}

    def args(self, params: Mapping[str, Any]) -> Any:
        values = {**self.fixed, **params} if self.fixed else params
        return tuple(values[k] for k in self.names) if self.names is not None else dict(values)

    def cursor(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        cur = conn.connection.cursor()
        cur.execute(self.sql, self.args(params))
        return cur

    def all(self, conn: Connection, **params: Any) -> list[tuple[Any, ...]]:
        cur = self.cursor(conn, params)
        try:
            return list(cur.fetchall())
        finally:
            cur.close()

    def first(self, conn: Connection, **params: Any) -> tuple[Any, ...] | None:
        cur = self.cursor(conn, params)
        try:
            row = cur.fetchone()
            return None if row is None else tuple(row)
        finally:
            cur.close()

    def run(self, conn: Connection, **params: Any) -> int:
        """Execute a write; returns the driver's row count."""
        cur = self.cursor(conn, params)
        try:
            return int(cur.rowcount)
        finally:
            cur.close()


_ACT_COLS = ("activity_id", "lead_id", "occurred_at", "type")
_LEAD_COLS = ("lead_id", "account_id", "created_at")


class _Statements:
    """The statements of the scoring path, compiled for one dialect."""

    def __init__(self, dialect: sa.Dialect) -> None:
        b = sa.bindparam
        a, le, ac, sc, sg, op = activities_t, leads_t, accounts_t, scores_t, stage_changes_t, opportunities_t

        def c(stmt: sa.ClauseElement) -> _Compiled:
            return _Compiled(stmt, dialect)

        acols = [a.c[n] for n in _ACT_COLS]
        self.lead = c(sa.select(le).where(le.c.lead_id == b("lead_id")))
        self.account = c(sa.select(ac).where(ac.c.account_id == b("account_id")))
        self.colleagues = c(sa.select(*[le.c[n] for n in _LEAD_COLS])
                            .where(le.c.account_id == b("account_id"), le.c.lead_id != b("lead_id")))
        self.own_activities = c(sa.select(*acols).where(a.c.lead_id == b("lead_id"), a.c.occurred_at <= b("cut"))
                                .order_by(a.c.occurred_at, a.c.activity_id))
        self.colleague_activities = c(
            sa.select(*acols)
            .select_from(a.join(le, le.c.lead_id == a.c.lead_id))
            .where(le.c.account_id == b("account_id"), a.c.lead_id != b("lead_id"), a.c.occurred_at > b("since"),
                   a.c.occurred_at <= b("cut")))
        self.stage_changes = c(sa.select(sg).where(sg.c.lead_id == b("lead_id"), sg.c.changed_at <= b("cut")))
        self.opps_of_lead = c(sa.select(op).where(op.c.lead_id == b("lead_id"), op.c.created_at <= b("cut")))
        self.opps_of_lead_or_account = c(
            sa.select(op).where(sa.or_(op.c.lead_id == b("lead_id"), op.c.account_id == b("account_id")),
                                op.c.created_at <= b("cut")))
        last_score = (sa.select(sc.c.stage, sc.c.scored_at, sc.c.stage_since)
                      .order_by(sc.c.scored_at.desc(), sc.c.id.desc()).limit(1))
        last_change = (sa.select(sg.c.stage, sg.c.changed_at).order_by(sg.c.changed_at.desc()).limit(1))
        self.last_score = c(last_score.where(sc.c.lead_id == b("lead_id")))
        self.last_score_before = c(last_score.where(sc.c.lead_id == b("lead_id"), sc.c.scored_at < b("cut")))
        self.last_change = c(last_change.where(sg.c.lead_id == b("lead_id")))
        self.last_change_before = c(last_change.where(sg.c.lead_id == b("lead_id"), sg.c.changed_at <= b("cut")))
        self.latest_scored_at = c(sa.select(sa.func.max(sc.c.scored_at)).where(sc.c.lead_id == b("lead_id")))
        self.insert_score = c(sc.insert().values({col.name: b(col.name) for col in sc.c if col.name != "id"}))
        self.insert_activity: _Compiled | None = None
        if dialect.name in ("sqlite", "postgresql"):
            if dialect.name == "sqlite":
                from sqlalchemy.dialects.sqlite import insert as dialect_insert
            else:
                from sqlalchemy.dialects.postgresql import insert as dialect_insert  # type: ignore[assignment]
            self.insert_activity = c(dialect_insert(a).values({col.name: b(col.name) for col in a.c})
                                     .on_conflict_do_nothing())
        self.lead_columns = [col.name for col in le.c]
        self.account_columns = [col.name for col in ac.c]
        self.stage_columns = [col.name for col in sg.c]
        self.opp_columns = [col.name for col in op.c]


def _none_if_na(value: Any) -> Any:
    if value is None:
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        return value
    return value


class EventStore:
    """Idempotent storage of CRM events and score history behind one SQLAlchemy engine.

    Every write method commits before it returns, so an HTTP answer sent after it never reports an
    event that a crash could lose.
    """

    def __init__(self, url: str, cache_rows: int = 0, checkpoint_seconds: float = 0.0) -> None:
        """``cache_rows`` > 0 keeps up to that many activities in memory for scoring reads (SQLite only;
        see :mod:`serving.cache`); 0 reads every history from SQL.

        ``checkpoint_seconds`` > 0 (SQLite): a background thread copies the write-ahead log into the
        database file that often, instead of the commit that happens to cross SQLite's 1000-page mark
        doing it (20-30 ms, an fsync included, once every ~200 scored activities). Commits stay exactly
        as durable; a commit still checkpoints by itself past 10000 pages, should the thread fall behind.
        """
        self.url = url
        connect_args: dict[str, Any] = {}
        if url.startswith("sqlite"):
            connect_args = {"check_same_thread": False, "timeout": 30}
        self.engine: Engine = sa.create_engine(url, connect_args=connect_args, pool_pre_ping=False)
        self.dialect = self.engine.dialect.name
        if self.dialect == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
            if checkpoint_seconds > 0:
                sa.event.listen(self.engine, "connect", _late_autocheckpoint)
        metadata.create_all(self.engine)
        # indexes added after a store was first created (create_all only adds those of new tables)
        for index in _LATER_INDEXES:
            index.create(self.engine, checkfirst=True)
        self.q = _Statements(self.engine.dialect)
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
        )

    def import_history(self, history: CRMHistory) -> dict[str, int]:
        """Bulk-load a validated CRM history (e.g. the generated demo CRM); idempotent by key.

        Returns the number of new rows per table.
        """
        counts: dict[str, int] = {}
        with self.begin() as conn:
            for name, (table, spec) in _TABLE_SPECS.items():
                rows = list(_frame_rows(history.table(name), spec))
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

    def load_lead_history(self, conn: Connection, lead_id: str, as_of: pd.Timestamp) -> CRMHistory:
        """The slice of CRM history that the features of ``(lead_id, as_of)`` read, up to ``as_of``.

        The lead with all its activities and stage changes; its account and the account's
        opportunities; the account's other leads only as far as the account roll-ups look at them
        (who exists since when, and their last ACCOUNT_WINDOW_DAYS of activity). Loading colleagues
        in full would make a lead of a 500-person account cost seconds instead of milliseconds.
        Activity ``properties`` are not a feature input and are not read back. Every query hits an
        index on lead or account id. With the activity cache (SQLite), the activities come from
        memory, brought up to date with the store first (:mod:`serving.cache`); the rest is read
        from SQL every time. ``tests/test_serving.py`` checks the result against the batch features
        computed on the full history.
        """
        cut = to_micros(as_of)
        q = self.q
        lead = q.lead.first(conn, lead_id=lead_id)
        if lead is None:
            raise KeyError(lead_id)
        lead_row = dict(zip(q.lead_columns, lead, strict=True))
        account_id = lead_row["account_id"]
        account_rows: list[dict[str, Any]] = []
        colleagues: list[tuple[Any, ...]] = []
        if account_id is not None:
            acc = q.account.first(conn, account_id=account_id)
            if acc is not None:
                account_rows = [dict(zip(q.account_columns, acc, strict=True))]
            colleagues = q.colleagues.all(conn, account_id=account_id, lead_id=lead_id)
        since = cut - ACCOUNT_WINDOW_DAYS * 86_400_000_000 if colleagues else None
        if self.cache is not None:
            cols = self.cache.activities(conn.connection, lead_id, account_id, [c[0] for c in colleagues], cut, since)
            activities = _activities_frame(cols)
        else:
            act_rows = q.own_activities.all(conn, lead_id=lead_id, cut=cut)
            if since is not None:
                act_rows += q.colleague_activities.all(conn, account_id=account_id, lead_id=lead_id, since=since,
                                                       cut=cut)
            activities = _columns_frame(list(_ACT_COLS), act_rows, ACTIVITIES)
        stages = q.stage_changes.all(conn, lead_id=lead_id, cut=cut)
        if account_id is not None:
            opps = q.opps_of_lead_or_account.all(conn, lead_id=lead_id, account_id=account_id, cut=cut)
        else:
            opps = q.opps_of_lead.all(conn, lead_id=lead_id, cut=cut)
        return CRMHistory(
            accounts=_account_frame(account_rows[0]) if account_rows else empty_frame(ACCOUNTS),
            leads=_leads_frame(lead_row, colleagues),
            activities=activities,
            stage_changes=_rows_frame([dict(zip(q.stage_columns, r, strict=True)) for r in stages], STAGE_CHANGES),
            opportunities=_rows_frame([dict(zip(q.opp_columns, r, strict=True)) for r in opps], OPPORTUNITIES),
            cutoff=from_micros(cut),
        )

    def current_stage(
        self, conn: Connection, lead_id: str, before: pd.Timestamp | None = None
    ) -> tuple[str | None, pd.Timestamp | None]:
        """The lead's stage just before ``before`` and since when it holds.

        The later of our last score (strictly before, so a retry sees the same previous stage) and
        the CRM's last stage change (at or before): a stage set by sales overrides our earlier advice.
        """
        q = self.q
        if before is not None:
            cut = to_micros(before)
            score = q.last_score_before.first(conn, lead_id=lead_id, cut=cut)
            change = q.last_change_before.first(conn, lead_id=lead_id, cut=cut)
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
                )
                for r in rows
            ]

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(sa.select(sa.literal(1)))


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


def _frame_rows(frame: pd.DataFrame, spec: TableSpec) -> Iterable[dict[str, Any]]:
    """Canonical CRM frame → plain rows in the stored form (timestamps as microseconds)."""
    cols = [c for c in spec.columns if c in frame.columns]
    data: dict[str, list[Any]] = {}
    for col in cols:
        s = frame[col]
        if spec.columns[col] == "ts":
            vals = s.dt.tz_convert("UTC").dt.tz_localize(None).dt.as_unit("us")
            ints = vals.to_numpy(dtype="datetime64[us]").view("int64")
            data[col] = [None if na else int(x) for x, na in zip(ints, vals.isna().to_numpy(), strict=True)]
        else:
            data[col] = [_none_if_na(v) for v in s.tolist()]
            if spec.columns[col] == "int":
                data[col] = [None if v is None else int(v) for v in data[col]]
            elif spec.columns[col] == "float":
                data[col] = [None if v is None else float(v) for v in data[col]]
            elif spec.columns[col] == "bool":
                data[col] = [None if v is None else bool(v) for v in data[col]]
    for i in range(len(frame)):
        yield {c: data[c][i] for c in cols}


_EMPTY: dict[str, pd.DataFrame] = {}


def empty_frame(spec: TableSpec) -> pd.DataFrame:
    """A zero-row canonical frame with exactly the contract's columns (built once per table)."""
    if spec.name not in _EMPTY:
        _EMPTY[spec.name] = empty_table(spec)[list(spec.columns)]
    return _EMPTY[spec.name].copy(deep=False)


_NAT = np.iinfo(np.int64).min


# ----------------------------------------------------------------------------- canonical frames, fast
# The scoring path builds five small frames per request; through ``pd.array``/``pd.DataFrame`` that
# costs more than the features themselves. These builders make the very same arrays (checked at import
# against the public constructors; any difference and the public ones are used).

_STR_DTYPE = pd.array(["a"], dtype="str").dtype
_TS_DTYPE = pd.DatetimeTZDtype("us", "UTC")
_ArrowStringArray: Any = pd.arrays.ArrowStringArray
_DatetimeArray: Any = pd.arrays.DatetimeArray
_IntegerArray: Any = pd.arrays.IntegerArray
_BooleanArray: Any = pd.arrays.BooleanArray


def _public_str(values: Any) -> Any:
    return pd.array(values, dtype="str")


def _fast_str(values: Any) -> Any:
    """Strings (None = missing) as the canonical ``str`` array, via one Arrow array."""
    if not isinstance(values, (pa.Array, pa.ChunkedArray)):
        try:
            values = pa.array(values, type=pa.large_string())
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # not all str (SQLite is dynamically typed)
            return pd.array(values, dtype="str")
    if isinstance(values, pa.Array):
        values = pa.chunked_array([values], type=pa.large_string())
    return _ArrowStringArray(values, dtype=_STR_DTYPE)


def _public_ts(ints: np.ndarray) -> Any:
    return pd.DatetimeIndex(ints.view("datetime64[us]")).tz_localize("UTC").array


def _fast_ts(ints: np.ndarray) -> Any:
    """int64 µs (int64 min = missing) as ``datetime64[us, UTC]``."""
    return _DatetimeArray._simple_new(ints.view("datetime64[us]"), dtype=_TS_DTYPE)


def _public_frame(data: dict[str, Any], n: int) -> pd.DataFrame:
    return pd.DataFrame(data, copy=False)


_COLUMN_INDEX: dict[tuple[str, ...], pd.Index] = {}


def _fast_frame(data: dict[str, Any], n: int) -> pd.DataFrame:
    names = tuple(data)
    columns = _COLUMN_INDEX.get(names)
    if columns is None:
        columns = _COLUMN_INDEX[names] = pd.Index(list(names))
    return pd.DataFrame._from_arrays(  # type: ignore[attr-defined,no-any-return]
        list(data.values()), columns=columns, index=pd.RangeIndex(n), verify_integrity=False
    )


def _pick_builders() -> tuple[Any, Any, Any]:
    """The fast builders if they give what the public ones give on this pandas, else the public ones."""
    try:
        probe = ["a", None]
        ints = np.array([1_700_000_000_000_000, _NAT], dtype=np.int64)
        s, t = _fast_str(probe), _fast_ts(ints)
        pd.testing.assert_extension_array_equal(s, _public_str(probe))
        pd.testing.assert_extension_array_equal(t, _public_ts(ints))
        data = {"s": s, "t": t, "f": np.array([1.0, np.nan])}
        pd.testing.assert_frame_equal(_fast_frame(data, 2), _public_frame(data, 2))
        if type(s) is not type(_public_str(probe)) or s.dtype != _STR_DTYPE:
            raise TypeError("different string array")
        return _fast_str, _fast_ts, _fast_frame
    except Exception:  # a pandas without these internals: the public constructors
        return _public_str, _public_ts, _public_frame


_str_array, _ts_array, _frame = _pick_builders()


def _column(kind: str, values: list[Any]) -> Any:
    """One canonical column from stored values (None = missing)."""
    if kind in ("id", "str", "json"):
        return _str_array(values)
    if kind == "ts":
        return _ts_array(np.array([_NAT if v is None else v for v in values], dtype=np.int64))
    if kind == "float":
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    mask = np.array([v is None for v in values], dtype=bool)
    if kind == "int":
        return _IntegerArray(np.array([0 if v is None else int(v) for v in values], dtype=np.int64), mask)
    if kind == "bool":
        return _BooleanArray(np.array([False if v is None else bool(v) for v in values], dtype=bool), mask)
    raise ValueError(f"unknown column kind {kind}")


def _columns_frame(names: list[str], rows: list[tuple[Any, ...]], spec: TableSpec) -> pd.DataFrame:
    """Like :func:`_rows_frame` for tuples in ``names`` order; absent contract columns are left empty."""
    if not rows:
        return empty_frame(spec)
    pos = {name: j for j, name in enumerate(names)}
    n = len(rows)
    data: dict[str, Any] = {}
    for col, kind in spec.columns.items():
        j = pos.get(col)
        data[col] = _column(kind, [r[j] for r in rows] if j is not None else [None] * n)
    return _frame(data, n)


def _rows_frame(rows: list[dict[str, Any]], spec: TableSpec) -> pd.DataFrame:
    """Stored rows → a frame with the canonical dtypes of ``leadscore.history``.

    Built from extension arrays directly: this runs on every scored activity, and going through
    ``pd.Series(...)`` per column costs several times more than the feature computation itself.
    """
    if not rows:
        return empty_frame(spec)
    data = {col: _column(kind, [r.get(col) for r in rows]) for col, kind in spec.columns.items()}
    return _frame(data, len(rows))


class _FrameMemo:
    """Frames already built from exactly these stored values (the key is the values themselves, read
    from the database on every request, so a hit can never be stale). Bounded, least recently used
    out first; callers get a shallow copy."""

    def __init__(self, size: int = 2048) -> None:
        self.size = size
        self.frames: dict[Any, pd.DataFrame] = {}
        self.lock = threading.Lock()

    def get(self, key: Any) -> pd.DataFrame | None:
        with self.lock:
            frame = self.frames.pop(key, None)
            if frame is not None:
                self.frames[key] = frame  # most recent last
        return None if frame is None else frame.copy(deep=False)

    def put(self, key: Any, frame: pd.DataFrame) -> pd.DataFrame:
        with self.lock:
            self.frames[key] = frame
            while len(self.frames) > self.size:
                del self.frames[next(iter(self.frames))]
        return frame.copy(deep=False)


_LEADS_MEMO = _FrameMemo()


def _leads_frame(lead: dict[str, Any], colleagues: list[tuple[Any, ...]]) -> pd.DataFrame:
    """The lead's full row, then its colleagues' ``_LEAD_COLS`` (other columns missing)."""
    key = (tuple(lead.get(c) for c in LEADS.columns), tuple(colleagues))
    frame = _LEADS_MEMO.get(key)
    if frame is None:
        frame = _LEADS_MEMO.put(key, _build_leads_frame(lead, colleagues))
    return frame


_ACCOUNTS_MEMO = _FrameMemo()


def _account_frame(account: dict[str, Any]) -> pd.DataFrame:
    key = tuple(account.get(c) for c in ACCOUNTS.columns)
    frame = _ACCOUNTS_MEMO.get(key)
    if frame is None:
        frame = _ACCOUNTS_MEMO.put(key, _rows_frame([account], ACCOUNTS))
    return frame


def _build_leads_frame(lead: dict[str, Any], colleagues: list[tuple[Any, ...]]) -> pd.DataFrame:
    n = 1 + len(colleagues)
    data: dict[str, Any] = {}
    for col, kind in LEADS.columns.items():
        if col in _LEAD_COLS:
            j = _LEAD_COLS.index(col)
            values = [lead.get(col), *[c[j] for c in colleagues]]
        else:
            values = [lead.get(col), *[None] * len(colleagues)]
        data[col] = _column(kind, values)
    return _frame(data, n)


def _activities_frame(cols: ActivityColumns) -> pd.DataFrame:
    """Activity columns from the cache as the canonical frame (``properties`` is not read back)."""
    n = len(cols)
    if not n:
        return empty_frame(ACTIVITIES)
    data = {
        "activity_id": _str_array(cols.activity_id),
        "lead_id": _str_array(cols.lead_id),
        "occurred_at": _ts_array(np.ascontiguousarray(cols.occurred_at, dtype=np.int64)),
        "type": _str_array(cols.type),
        "properties": _str_array(pa.nulls(n, type=pa.large_string())),
    }
    return _frame({c: data[c] for c in ACTIVITIES.columns}, n)
