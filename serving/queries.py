"""The statements of the scoring path, compiled once per dialect and run on the raw DBAPI cursor.

Reads (a lead, its account, colleagues, activities, stage changes, opportunities, the last score) and
the two hot writes (an activity, a score), over the tables of :mod:`leadscore.serving.store_tables`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from leadscore.serving.store_tables import (
    accounts_t,
    activities_t,
    leads_t,
    opportunities_t,
    scores_t,
    stage_changes_t,
)


class Compiled:
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


class Statements:
    """The statements of the scoring path, compiled for one dialect."""

    def __init__(self, dialect: sa.Dialect) -> None:
        b = sa.bindparam
        a, le, ac, sc, sg, op = activities_t, leads_t, accounts_t, scores_t, stage_changes_t, opportunities_t

        def c(stmt: sa.ClauseElement) -> Compiled:
            return Compiled(stmt, dialect)

        self.lead = c(sa.select(le).where(le.c.lead_id == b("lead_id")))
        self.account = c(sa.select(ac).where(ac.c.account_id == b("account_id")))
        # the scoring read's first statement: the lead and the account it names, one row (no account row:
        # the account's columns are all NULL, told apart from a row by its key)
        self.lead_and_account = c(sa.select(le, ac).select_from(le.outerjoin(ac, ac.c.account_id == le.c.account_id))
                                  .where(le.c.lead_id == b("lead_id")))
        # the scoring read (serving/lead_read.py): only the columns the features read
        # the lead's side only: sales touches are stored (``actor = 'sales'``) but never interest
        # (features/actors.py drops them in batch the same way)
        lead_side = a.c.actor != "sales"
        self.own_activity_times = c(sa.select(a.c.occurred_at, a.c.type)
                                    .where(a.c.lead_id == b("lead_id"), a.c.occurred_at <= b("cut"), lead_side))
        self.colleague_activity_times = c(
            sa.select(a.c.occurred_at, a.c.type)
            .select_from(a.join(le, le.c.lead_id == a.c.lead_id))
            .where(le.c.account_id == b("account_id"), a.c.lead_id != b("lead_id"), a.c.occurred_at > b("since"),
                   a.c.occurred_at <= b("cut"), lead_side))
        self.member_created = c(sa.select(le.c.created_at).where(le.c.account_id == b("account_id")))
        self.stage_times = c(sa.select(sg.c.stage, sg.c.changed_at)
                             .where(sg.c.lead_id == b("lead_id"), sg.c.changed_at <= b("cut")))
        opp_cols = (op.c.account_id, op.c.created_at, op.c.closed_at)
        self.opp_times_of_lead_or_account = c(
            sa.select(*opp_cols).where(sa.or_(op.c.lead_id == b("lead_id"), op.c.account_id == b("account_id")),
                                       op.c.created_at <= b("cut")))
        last_score = (sa.select(sc.c.stage, sc.c.scored_at, sc.c.stage_since)
                      .order_by(sc.c.scored_at.desc(), sc.c.id.desc()).limit(1))
        last_change = (sa.select(sg.c.stage, sg.c.changed_at).order_by(sg.c.changed_at.desc()).limit(1))
        self.last_score = c(last_score.where(sc.c.lead_id == b("lead_id")))
        self.last_change = c(last_change.where(sg.c.lead_id == b("lead_id")))
        # the stage just before a moment, read at a score and again at its check: the last score strictly
        # before and the last CRM change at or before, in one statement (rows ``(0, stage, scored_at,
        # stage_since)`` and ``(1, stage, changed_at, changed_at)``, each present if it exists)
        score_before = last_score.where(sc.c.lead_id == b("lead_id"), sc.c.scored_at < b("cut")).subquery("s")
        change_before = last_change.where(sg.c.lead_id == b("lead_id"), sg.c.changed_at <= b("cut")).subquery("g")
        self.stage_before = c(sa.union_all(
            sa.select(sa.literal(0).label("kind"), score_before.c.stage, score_before.c.scored_at.label("at"),
                      score_before.c.stage_since.label("since")),
            sa.select(sa.literal(1).label("kind"), change_before.c.stage, change_before.c.changed_at.label("at"),
                      change_before.c.changed_at.label("since"))))
        # what one score read, counted again at its append (serving/rescore.py): own rows, colleagues' window
        self.count_own_activities = c(sa.select(sa.func.count()).select_from(a)
                                      .where(a.c.lead_id == b("lead_id"), a.c.occurred_at <= b("cut")))
        self.count_colleague_activities = c(
            sa.select(sa.func.count())
            .select_from(a.join(le, le.c.lead_id == a.c.lead_id))
            .where(le.c.account_id == b("account_id"), a.c.lead_id != b("lead_id"), a.c.occurred_at > b("since"),
                   a.c.occurred_at <= b("cut")))
        # the latest score (by moment scored, then insertion) of each colleague: (lead, scored_at, id)
        s2 = sc.alias("s2")
        latest_id = (sa.select(s2.c.id).where(s2.c.lead_id == le.c.lead_id)
                     .order_by(s2.c.scored_at.desc(), s2.c.id.desc()).limit(1).scalar_subquery())
        self.colleague_latest_scores = c(
            sa.select(le.c.lead_id, sc.c.scored_at, sc.c.id).select_from(le.join(sc, sc.c.id == latest_id))
            .where(le.c.account_id == b("account_id"), le.c.lead_id != b("lead_id")))
        self.latest_score_key = c(sa.select(sc.c.scored_at, sc.c.id).where(sc.c.lead_id == b("lead_id"))
                                  .order_by(sc.c.scored_at.desc(), sc.c.id.desc()).limit(1))
        self.score_mark = c(sa.select(sa.func.coalesce(sa.func.max(sc.c.id), 0)))
        # SQLite hands out activity rowids in commit order (serving/cache.py): "what committed since" is a
        # range of the rowid index, however large the account
        self.activity_mark: Compiled | None = None
        self.activities_since_mark: Compiled | None = None
        if dialect.name == "sqlite":
            rowid: sa.ColumnClause[int] = sa.literal_column("activities.rowid", sa.Integer)
            self.activity_mark = c(sa.select(sa.func.coalesce(sa.func.max(rowid), 0)).select_from(a))
            self.activities_since_mark = c(
                sa.select(a.c.lead_id, a.c.occurred_at, le.c.account_id)
                .select_from(a.outerjoin(le, le.c.lead_id == a.c.lead_id)).where(rowid > b("mark")))
        self.latest_scored_at = c(sa.select(sa.func.max(sc.c.scored_at)).where(sc.c.lead_id == b("lead_id")))
        self.insert_score = c(sc.insert().values({col.name: b(col.name) for col in sc.c if col.name != "id"}))
        self.insert_activity: Compiled | None = None
        if dialect.name in ("sqlite", "postgresql"):
            if dialect.name == "sqlite":
                from sqlalchemy.dialects.sqlite import insert as dialect_insert
            else:
                from sqlalchemy.dialects.postgresql import insert as dialect_insert  # type: ignore[assignment]
            self.insert_activity = c(dialect_insert(a).values({col.name: b(col.name) for col in a.c})
                                     .on_conflict_do_nothing())
            # a column a caller leaves out gets the table spec's default (``actor`` = the lead), as in Core
            self.insert_activity.fixed.update({col.name: arg for col in a.c  # a scalar default's value
                                               if (arg := getattr(col.default, "arg", None)) is not None
                                               and not callable(arg)})
        self.lead_columns = [col.name for col in le.c]
        self.account_columns = [col.name for col in ac.c]

