"""Which leads belong to an account, as the activity cache checks it on every scoring read.

An account's members can change under the cache (a lead created, moved to another account, its
creation time corrected), by this process or another, and an update leaves no trace a reader could
follow. Migration ``0006`` keeps ``account_versions``: per account a counter that SQLite triggers on
``leads`` bump on every insert, delete, move or creation-time change, in the writer's own transaction.
A reader compares one indexed row with the version it last read the members at, and reads the members
(a scan of the account's leads) only when it moved: a 4,000-lead account then costs what a one-lead
account costs. Versions only grow, so a version equal to the one kept means nothing changed since.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from leadscore.serving.store_tables import metadata

#: the table migration 0006 creates (declared here so the schema comparison with the migrations holds)
account_versions_t = sa.Table(
    "account_versions", metadata,
    sa.Column("account_id", sa.String(128), nullable=False),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.PrimaryKeyConstraint("account_id"),
)

_VERSION = "SELECT version FROM account_versions WHERE account_id = ?"
_MEMBERS = "SELECT lead_id, created_at FROM leads WHERE account_id = ?"


def fetch(raw: Any, sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
    """Rows of one statement on a raw DBAPI connection (the cache's reads: no SQLAlchemy per call)."""
    cur = raw.cursor()
    try:
        cur.execute(sql, tuple(args))
        return list(cur.fetchall())
    finally:
        cur.close()


def members_version(raw: Any, account_id: str) -> int | None:
    """The account's membership version (None: no lead ever named it since the migration)."""
    rows = fetch(raw, _VERSION, (account_id,))
    return int(rows[0][0]) if rows else None


def members(raw: Any, account_id: str) -> list[tuple[str, int | None]]:
    """``(lead_id, created_at)`` of the account's leads, as the leads table holds them now."""
    return [(str(lid), t) for lid, t in fetch(raw, _MEMBERS, (account_id,))]
