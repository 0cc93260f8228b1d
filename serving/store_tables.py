"""The event store's SQL tables, derived from the table specs of :mod:`leadscore.tables`.

The five CRM tables plus the service's ``scores`` audit table and its ``stale_marks`` queue, in plain SQLAlchemy Core so the same
metadata serves SQLite and PostgreSQL. These describe the *current* schema (what the newest
migration produces; ``tests/test_store_migrations.py`` checks they agree); an existing store reaches
it through the Alembic migrations of :mod:`leadscore.serving.migrate`, never through ``create_all``.

Why timestamps are stored as integer microseconds since the epoch (UTC): SQLite has no time zone
type, and integers compare, index and convert to pandas ``datetime64[us, UTC]`` exactly and fast on
every backend, so the online history is bit-for-bit the history the batch pipeline sees.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import sqlalchemy as sa

from leadscore.tables import ID_LENGTH, SERVICE_TABLES, TABLES, Column, TableSpec

metadata = sa.MetaData()


def _sql_type(col: Column) -> Any:
    if col.kind == "serial":
        return sa.Integer  # INTEGER PRIMARY KEY: SQLite's rowid, a sequence elsewhere
    if col.kind in ("ts", "int"):
        return sa.BigInteger
    if col.kind == "float":
        return sa.Float
    if col.kind == "bool":
        return sa.Boolean
    if col.kind in ("id", "str") and col.max_length is not None:
        return sa.String(col.max_length)
    return sa.Text


def sql_table(spec: TableSpec, meta: sa.MetaData) -> sa.Table:
    """The SQLAlchemy table of one spec: its columns, primary key (in key order) and indexes."""
    columns = [
        sa.Column(c.name, _sql_type(c), nullable=c.nullable and c.name not in spec.key, default=c.default,
                  autoincrement=c.kind == "serial")
        for c in spec.fields
    ]
    indexes = [sa.Index(name, *cols) for name, cols in spec.indexes]
    return sa.Table(spec.name, meta, *columns, sa.PrimaryKeyConstraint(*spec.key), *indexes)


accounts_t = sql_table(TABLES["accounts"], metadata)
leads_t = sql_table(TABLES["leads"], metadata)
activities_t = sql_table(TABLES["activities"], metadata)
stage_changes_t = sql_table(TABLES["stage_changes"], metadata)
opportunities_t = sql_table(TABLES["opportunities"], metadata)
scores_t = sql_table(SERVICE_TABLES["scores"], metadata)

#: Leads whose latest stored score may be stale, and why (:mod:`leadscore.serving.stale`). One row per
#: lead, merged by upsert: new activities of ``lead_id`` at ``[since, until]`` (µs) were committed when
#: the newest score id was ``score_mark``; the latest scores up to that id of the lead (scored at or after
#: ``since``) and, if ``colleagues``, of its account colleagues (scored within the account window after
#: them) must be recomputed. ``token`` is random per write: a worker deletes the row only if it is
#: still the one it read (compare-and-clear), so a mark made meanwhile survives. Not a CRM table, so it
#: has no table spec; a service-internal queue kept in the store so it survives ``kill -9``.
stale_t = sa.Table(
    "stale_marks", metadata,
    sa.Column("lead_id", sa.String(ID_LENGTH), nullable=False),
    sa.Column("account_id", sa.String(ID_LENGTH), nullable=True),
    sa.Column("since", sa.BigInteger, nullable=False),
    sa.Column("until", sa.BigInteger, nullable=False),
    sa.Column("score_mark", sa.BigInteger, nullable=False),
    sa.Column("colleagues", sa.Boolean, nullable=False),
    sa.Column("token", sa.BigInteger, nullable=False),
    sa.PrimaryKeyConstraint("lead_id"),
    sa.Index("ix_stale_marks_account_id", "account_id"),
)

#: what ``leadscore score --changed-only`` and ``leadscore sync`` last sent each CRM target, per lead
#: (issue 14: only stage or score-band changes are exported again); migration 0004
score_exports_t = sa.Table(
    "score_exports", metadata,
    sa.Column("target", sa.String(32), nullable=False),
    sa.Column("lead_id", sa.String(128), nullable=False),
    sa.Column("stage", sa.String(32), nullable=False),
    sa.Column("band", sa.String(8), nullable=False),
    sa.Column("p_sql", sa.Float, nullable=False),
    sa.Column("exported_at", sa.BigInteger, nullable=False),
    sa.PrimaryKeyConstraint("target", "lead_id"),
)
#: CRM batches not yet accepted by the CRM (``leadscore sync``): written before the first try, deleted
#: once the CRM answered 2xx, so a failed batch is retried by the next run, never lost; migration 0004
export_outbox_t = sa.Table(
    "export_outbox", metadata,
    sa.Column("id", sa.Integer, nullable=False, autoincrement=True),
    sa.Column("target", sa.String(32), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("last_error", sa.Text),
    sa.PrimaryKeyConstraint("id"),
)

#: the CRM tables with their specs, in load order (parents first)
CRM_TABLES: dict[str, tuple[sa.Table, TableSpec]] = {name: (metadata.tables[name], spec) for name, spec in TABLES.items()}


def to_micros(ts: pd.Timestamp) -> int:
    """UTC timestamp → integer microseconds since the epoch (the stored form)."""
    # ``Timestamp.value`` is nanoseconds since the epoch in UTC whatever the unit and the time zone, and a
    # naive timestamp is read as UTC (so is its ``value``): no conversion needed (each costs ~5 µs, and
    # one request converts a dozen times)
    return int(pd.Timestamp(ts).value // 1000)


def from_micros(value: int) -> pd.Timestamp:
    return pd.Timestamp(value, unit="us", tz="UTC")
