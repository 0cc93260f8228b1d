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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from leadscore.history import CRMHistory, empty_table
from leadscore.tables import ACCOUNTS, ACTIVITIES, LEADS, OPPORTUNITIES, STAGE_CHANGES, TableSpec

metadata = sa.MetaData()


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

    def __init__(self, url: str) -> None:
        self.url = url
        connect_args: dict[str, Any] = {}
        if url.startswith("sqlite"):
            connect_args = {"check_same_thread": False, "timeout": 30}
        self.engine: Engine = sa.create_engine(url, connect_args=connect_args, pool_pre_ping=False)
        self.dialect = self.engine.dialect.name
        if self.dialect == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        metadata.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
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
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        out: list[bool] = []
        for row in rows:
            if self.dialect == "sqlite":
                res = conn.execute(sqlite_insert(activities_t).on_conflict_do_nothing(), [dict(row)])
                out.append(bool(res.rowcount))
            else:
                out.append(self._insert_ignore(conn, activities_t, [row]) == 1)
        return out

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
        existing = conn.execute(sa.select(table).where(table.c[key] == key_value)).mappings().first()
        has_flag = "created_at_explicit" in table.c
        if existing is None:
            row = {key: key_value, "created_at": seen, **values}
            if has_flag:
                row["created_at_explicit"] = explicit
            if self._insert_ignore(conn, table, [row]) == 1:
                return
            # another request created it between our read and our insert: merge into theirs
            existing = conn.execute(sa.select(table).where(table.c[key] == key_value)).mappings().first()
            if existing is None:
                return
        update = dict(values)
        if not explicit and (not has_flag or not existing["created_at_explicit"]) and seen < existing["created_at"]:
            update["created_at"] = seen
        if explicit and has_flag:
            update["created_at_explicit"] = True
        if update:
            conn.execute(table.update().where(table.c[key] == key_value).values(**update))

    def add_stage_change(
        self, conn: Connection, lead_id: str, stage: str, changed_at: pd.Timestamp, set_by: str
    ) -> bool:
        row = {"lead_id": lead_id, "stage": stage, "changed_at": to_micros(changed_at), "set_by": set_by}
        return self._insert_ignore(conn, stage_changes_t, [row]) == 1

    def append_score(self, conn: Connection, score: StoredScore) -> None:
        conn.execute(
            scores_t.insert().values(
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
        index on lead or account id. ``tests/test_serving.py`` checks the result against the batch
        features computed on the full history.
        """
        cut = to_micros(as_of)
        lead = conn.execute(sa.select(leads_t).where(leads_t.c.lead_id == lead_id)).mappings().first()
        if lead is None:
            raise KeyError(lead_id)
        account_id = lead["account_id"]
        lead_frame = _rows_frame([dict(lead)], LEADS)
        account_rows: list[dict[str, Any]] = []
        if account_id is not None:
            account_rows = [
                dict(r)
                for r in conn.execute(sa.select(accounts_t).where(accounts_t.c.account_id == account_id)).mappings()
            ]
            lead_cols = [leads_t.c.lead_id, leads_t.c.account_id, leads_t.c.created_at]
            colleagues = _raw_rows(
                conn, sa.select(*lead_cols).where(leads_t.c.account_id == account_id, leads_t.c.lead_id != lead_id)
            )
            if colleagues:
                lead_frame = pd.concat(
                    [lead_frame, _columns_frame([c.name for c in lead_cols], colleagues, LEADS)], ignore_index=True
                )
        cols = [activities_t.c.activity_id, activities_t.c.lead_id, activities_t.c.occurred_at, activities_t.c.type]
        names = [c.name for c in cols]
        act_rows = _raw_rows(
            conn,
            sa.select(*cols)
            .where(activities_t.c.lead_id == lead_id, activities_t.c.occurred_at <= cut)
            .order_by(activities_t.c.occurred_at, activities_t.c.activity_id),
        )
        if account_id is not None and len(lead_frame) > 1:
            since = cut - ACCOUNT_WINDOW_DAYS * 86_400_000_000
            act_rows = act_rows + _raw_rows(
                conn,
                sa.select(*cols)
                .select_from(activities_t.join(leads_t, leads_t.c.lead_id == activities_t.c.lead_id))
                .where(
                    leads_t.c.account_id == account_id,
                    activities_t.c.lead_id != lead_id,
                    activities_t.c.occurred_at > since,
                    activities_t.c.occurred_at <= cut,
                ),
            )
        stages = conn.execute(
            sa.select(stage_changes_t).where(stage_changes_t.c.lead_id == lead_id, stage_changes_t.c.changed_at <= cut)
        ).mappings()
        owner: sa.ColumnElement[bool] = opportunities_t.c.lead_id == lead_id
        if account_id is not None:
            owner = sa.or_(owner, opportunities_t.c.account_id == account_id)
        opps = conn.execute(
            sa.select(opportunities_t).where(owner, opportunities_t.c.created_at <= cut)
        ).mappings()
        return CRMHistory(
            accounts=_rows_frame(account_rows, ACCOUNTS),
            leads=lead_frame,
            activities=_columns_frame(names, act_rows, ACTIVITIES),
            stage_changes=_rows_frame([dict(r) for r in stages], STAGE_CHANGES),
            opportunities=_rows_frame([dict(r) for r in opps], OPPORTUNITIES),
            cutoff=from_micros(cut),
        )

    def current_stage(
        self, conn: Connection, lead_id: str, before: pd.Timestamp | None = None
    ) -> tuple[str | None, pd.Timestamp | None]:
        """The lead's stage just before ``before`` and since when it holds.

        The later of our last score (strictly before, so a retry sees the same previous stage) and
        the CRM's last stage change (at or before): a stage set by sales overrides our earlier advice.
        """
        score_q = sa.select(scores_t.c.stage, scores_t.c.scored_at, scores_t.c.stage_since).where(
            scores_t.c.lead_id == lead_id
        )
        change_q = sa.select(stage_changes_t.c.stage, stage_changes_t.c.changed_at).where(
            stage_changes_t.c.lead_id == lead_id
        )
        if before is not None:
            cut = to_micros(before)
            score_q = score_q.where(scores_t.c.scored_at < cut)
            change_q = change_q.where(stage_changes_t.c.changed_at <= cut)
        score = conn.execute(
            score_q.order_by(scores_t.c.scored_at.desc(), scores_t.c.id.desc()).limit(1)
        ).first()
        change = conn.execute(change_q.order_by(stage_changes_t.c.changed_at.desc()).limit(1)).first()
        if score is not None and (change is None or score[1] >= change[1]):
            return str(score[0]), from_micros(int(score[2]))
        if change is not None:
            return str(change[0]), from_micros(int(change[1]))
        return None, None

    def latest_scored_at(self, conn: Connection, lead_id: str) -> pd.Timestamp | None:
        value = conn.execute(
            sa.select(sa.func.max(scores_t.c.scored_at)).where(scores_t.c.lead_id == lead_id)
        ).scalar()
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


def _raw_rows(conn: Connection, stmt: sa.Select[Any]) -> list[tuple[Any, ...]]:
    """Plain DBAPI tuples for a SELECT, inside ``conn``'s transaction.

    SQLAlchemy's Row objects cost ~10 µs each; a lead of a big account reads ~10k activity rows per
    score, so the hot path skips them (about 4x faster). Compiled for the connection's dialect, so it
    works on SQLite and PostgreSQL alike.
    """
    compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params = compiled.params
    args: Any = tuple(params[k] for k in compiled.positiontup or ()) if compiled.positional else params
    cur = conn.connection.cursor()
    try:
        cur.execute(str(compiled), args)
        return list(cur.fetchall())
    finally:
        cur.close()


def _columns_frame(names: list[str], rows: list[tuple[Any, ...]], spec: TableSpec) -> pd.DataFrame:
    """Like :func:`_rows_frame` for tuples in ``names`` order; absent contract columns are left empty."""
    if not rows:
        return empty_frame(spec)
    table = np.array(rows, dtype=object)
    columns = {name: table[:, j] for j, name in enumerate(names)}
    n = len(rows)
    data: dict[str, Any] = {}
    for col, kind in spec.columns.items():
        values = columns.get(col)
        if kind in ("id", "str", "json"):
            data[col] = pd.array(values if values is not None else [None] * n, dtype="str")
        elif kind == "ts":
            ints = np.array([_NAT if v is None else v for v in (values if values is not None else [None] * n)],
                            dtype=np.int64)
            data[col] = pd.DatetimeIndex(ints.view("datetime64[us]")).tz_localize("UTC").array
        else:
            raise ValueError(f"{spec.name}.{col}: kind {kind} is not read on the fast path")
    return pd.DataFrame(data, copy=False)


def _rows_frame(rows: list[dict[str, Any]], spec: TableSpec) -> pd.DataFrame:
    """Stored rows → a frame with the canonical dtypes of ``leadscore.history``.

    Built from extension arrays directly: this runs on every scored activity, and going through
    ``pd.Series(...)`` per column costs several times more than the feature computation itself.
    """
    if not rows:
        return empty_frame(spec)
    n = len(rows)
    data: dict[str, Any] = {}
    for col, kind in spec.columns.items():
        values = [r.get(col) for r in rows]
        if kind in ("id", "str", "json"):
            data[col] = pd.array(values, dtype="str")
        elif kind == "ts":
            ints = np.fromiter((_NAT if v is None else v for v in values), dtype=np.int64, count=n)
            data[col] = pd.DatetimeIndex(ints.view("datetime64[us]")).tz_localize("UTC").array
        elif kind == "int":
            data[col] = pd.array(values, dtype="Int64")
        elif kind == "float":
            data[col] = np.fromiter((np.nan if v is None else v for v in values), dtype=np.float64, count=n)
        elif kind == "bool":
            data[col] = pd.array(values, dtype="boolean")
    return pd.DataFrame(data, copy=False)
