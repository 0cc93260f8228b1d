"""Versioned event store: Alembic migrations shipped in the package, run when a store is opened.

A store written by one release upgrades in place when the next one opens it. The migrations live in
``serving/migrations`` (package data); the Alembic configuration is built here, so nothing depends on
an ``alembic.ini`` in the working directory. Three cases at open:

* the store is at the newest revision: nothing is written, no lock is taken (replicas start fast);
* it is empty or versioned but behind: the missing revisions run, under a lock (SQLite ``BEGIN
  IMMEDIATE``, a PostgreSQL advisory lock) so that replicas starting together migrate once;
* it predates migrations (no ``alembic_version``): if it holds the baseline schema (revision
  ``0001``, what ``create_all`` made) it is stamped ``0001`` and upgraded; anything else is refused
  with what differs, rather than guessed at.

To write a migration after changing a table spec, let Alembic compare the specs with a store at head::

    from alembic import command
    from leadscore.serving.migrate import alembic_config
    command.revision(alembic_config("sqlite:///head.db"), "what changed", autogenerate=True)

then review the generated file in ``serving/migrations/versions/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

from leadscore.errors import StoreError

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
#: the schema stores had before they were versioned
BASELINE = "0001"
#: any constant: the PostgreSQL advisory lock that serialises migrations of one database
_PG_LOCK_KEY = 0x1EAD5C0E


class StoreSchemaError(StoreError):
    """The database holds tables that are not an event store this release knows how to upgrade."""


def alembic_config(url: str | None = None, connection: Connection | None = None) -> Config:
    """The Alembic configuration of the event store, for a URL or an open connection."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise StoreSchemaError(f"no migrations in {MIGRATIONS_DIR}")
    return head


def store_revision(conn: Connection) -> str | None:
    """The revision a store is at (``None``: unversioned or empty)."""
    return MigrationContext.configure(conn).get_current_revision()


def upgrade_store(engine: Engine) -> str:
    """Bring the store behind ``engine`` to the newest revision; returns it. A no-op at head."""
    head = head_revision()
    with engine.connect() as conn:
        if store_revision(conn) == head:
            return head
    with _migration_lock(engine) as conn:
        current = store_revision(conn)  # again: another process may have migrated while we waited
        if current == head:
            return head
        if current is None:
            _adopt_unversioned(conn)
        command.upgrade(alembic_config(connection=conn), "head")
    return head


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[Connection]:
    """One transaction that holds the database's write lock until it commits.

    SQLite: ``BEGIN IMMEDIATE`` takes the write lock up front (a second opener waits in the busy
    handler, then finds the store at head); DDL is transactional there, so a failed migration leaves
    nothing behind. PostgreSQL: a transaction-scoped advisory lock, DDL transactional too.
    """
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        elif engine.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        try:
            yield conn
        except BaseException:
            conn.rollback()
            raise
        conn.commit()


def _baseline_schema() -> sa.MetaData:
    """The baseline revision's tables, as an in-memory SQLite database built by that very revision."""
    engine = sa.create_engine("sqlite://")
    try:
        with engine.connect() as conn:
            command.upgrade(alembic_config(connection=conn), BASELINE)
            meta = sa.MetaData()
            meta.reflect(conn)
            meta.remove(meta.tables["alembic_version"])
            return meta
    finally:
        engine.dispose()


def _adopt_unversioned(conn: Connection) -> None:
    """Stamp a store made before migrations with the baseline, after checking it holds the baseline.

    What the old code added at every open (tables and indexes it found missing) is created here too,
    so any store the previous release could open is adopted. Column differences are refused.
    """
    inspector = sa.inspect(conn)
    present = set(inspector.get_table_names())
    baseline = _baseline_schema()
    if not present & set(baseline.tables):
        return  # an empty database (or someone else's tables only): the migrations create ours
    problems = []
    for name, table in baseline.tables.items():
        if name not in present:
            continue
        have = [c["name"] for c in inspector.get_columns(name)]
        want = [c.name for c in table.columns]
        if set(have) != set(want):
            problems.append(f"{name} has columns {sorted(have)}, the baseline {sorted(want)}")
    if problems:
        url = conn.engine.url.render_as_string(hide_password=True)
        raise StoreSchemaError(f"{url} is not an event store of a known release: " + "; ".join(problems))
    for name, table in baseline.tables.items():
        if name not in present:
            table.create(conn)
            continue
        indexes = {i["name"] for i in inspector.get_indexes(name)}
        for index in table.indexes:
            if index.name not in indexes:
                index.create(conn)
    command.stamp(alembic_config(connection=conn), BASELINE)
