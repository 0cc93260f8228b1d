"""The event store is versioned: a store of the previous release upgrades in place; new stores start at head.

Every test runs on SQLite and on a real PostgreSQL server (``store_url`` in ``tests/pg_support.py``).
``tests/data/event_store_v0.db`` was written by the store code of the release before migrations
(commit 5212ef7, ``metadata.create_all`` plus its hand-kept index): two leads of one account, four
activities, a stage change, an opportunity and two scores, then checkpointed out of WAL mode. On
PostgreSQL the same store is the baseline revision's tables (what ``create_all`` made there) holding
the same rows, without ``alembic_version``.
"""

from __future__ import annotations

import shutil
import sqlite3
import threading
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from leadscore.config import Settings
from leadscore.features.schema import FIT_NUMERIC
from leadscore.serving.migrate import (
    BASELINE,
    StoreSchemaError,
    alembic_config,
    head_revision,
    store_revision,
)
from leadscore.serving.store import EventStore, StoredScore
from leadscore.serving.store_tables import metadata
from tests.pg_support import PostgresServer

V0_STORE = Path(__file__).parent / "data" / "event_store_v0.db"
V0_TABLES = ("accounts", "leads", "activities", "stage_changes", "opportunities", "scores")
T0 = pd.Timestamp("2026-03-01T09:00:00Z")


def _v0_store(url: str) -> None:
    """Put the previous release's store at ``url`` (the SQLite file, or its rows in the baseline on PostgreSQL)."""
    target = sa.engine.make_url(url)
    if target.get_backend_name() == "sqlite":
        shutil.copy(V0_STORE, str(target.database))
        return
    with sqlite3.connect(V0_STORE) as src:
        rows = {t: src.execute(f"SELECT * FROM {t}").fetchall() for t in V0_TABLES}
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(connection=conn), BASELINE)
            conn.exec_driver_sql("DROP TABLE alembic_version")
            meta = sa.MetaData()
            meta.reflect(conn)
            for name in V0_TABLES:
                table = meta.tables[name]
                cols = [c.name for c in table.columns]
                bools = {c.name for c in table.columns if isinstance(c.type, sa.Boolean)}
                conn.execute(table.insert(), [{k: (bool(v) if k in bools and v is not None else v)
                                               for k, v in zip(cols, r, strict=True)} for r in rows[name]])
            if "scores" in meta.tables:  # rows copied with their ids: move the sequence past them
                conn.exec_driver_sql("SELECT setval(pg_get_serial_sequence('scores', 'id'), max(id)) FROM scores")
    finally:
        engine.dispose()


def _execute(url: str, *statements: str) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            for sql in statements:
                conn.exec_driver_sql(sql)
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _rows(url: str, table: str) -> list[tuple[object, ...]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            order = "1" if table == "alembic_version" else "1, 2"
            return [tuple(r) for r in conn.exec_driver_sql(f"SELECT * FROM {table} ORDER BY {order}")]
    finally:
        engine.dispose()


def _schema_drift(store: EventStore) -> list[object]:
    """What Alembic would still have to change for the store to equal the table specs (nothing, at head)."""
    with store.read() as conn:
        return list(compare_metadata(MigrationContext.configure(conn), metadata))


def test_store_of_the_previous_release_upgrades_in_place(store_url: str, settings: Settings) -> None:
    _v0_store(store_url)
    assert "alembic_version" not in _tables(store_url)
    before = {t: _rows(store_url, t) for t in V0_TABLES}
    assert [len(before[t]) for t in before] == [1, 2, 4, 1, 1, 2]

    store = EventStore(store_url)
    try:
        assert store.revision == head_revision() != BASELINE
        with store.read() as conn:
            assert store_revision(conn) == head_revision()
        assert _schema_drift(store) == []
        # every old row is still there, unchanged; the old scores have no band
        for table, rows in before.items():
            after = _rows(store_url, table)
            assert [r[: len(rows[0])] for r in after] == rows, table
        scores = store.score_history("lead-1")
        assert [(s.stage, s.previous_stage, s.p_sql, s.band) for s in scores] == [
            ("mql", "lead", 0.61, None), ("lead", None, 0.12, None)]
        assert scores[0].reasons == {"positive": ["demo request"], "negative": []}
        with store.read() as conn:
            history = store.load_lead(conn, "lead-1", T0 + pd.Timedelta(days=10), settings)
            assert store.current_stage(conn, "lead-1") == ("mql", T0 + pd.Timedelta(hours=3))
            other = store.load_lead(conn, "lead-2", T0 + pd.Timedelta(days=10), settings)
        # the old rows read back as the feature kernel's arrays
        assert len(history.act_t) == 3 and history.account is not None
        assert other.act_k.tolist() == [settings.activity_names.index("email_open")]
        assert history.fit_num[FIT_NUMERIC.index("employees")] == 120.0
        assert len(history.account.opp_created) == 1
        assert history.stg_k.tolist() == [settings.stages.all.index("mql")]
        # the new column is written and read back
        with store.begin() as conn:
            store.append_score(conn, StoredScore(
                lead_id="lead-1", scored_at=T0 + pd.Timedelta(days=1), computed_at=T0 + pd.Timedelta(days=1),
                p_sql=0.7, p_opportunity=0.3, stage="sql", previous_stage="mql", model_version="leadscore/8",
                reasons={"positive": [], "negative": []}, stage_since=T0 + pd.Timedelta(days=1), band="A1"))
        assert store.score_history("lead-1", limit=1)[0].band == "A1"
    finally:
        store.close()


def test_a_new_store_is_created_at_head_and_opening_again_changes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "fresh.db"
    store = EventStore(f"sqlite:///{db}")
    try:
        assert store.revision == head_revision()
        assert _schema_drift(store) == []
    finally:
        store.close()
    watch = sqlite3.connect(db)  # one connection: its data_version moves when anyone else commits
    schema = watch.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
    version = watch.execute("SELECT version_num FROM alembic_version").fetchall()
    changes = watch.execute("PRAGMA data_version").fetchone()
    assert version == [(head_revision(),)]
    again = EventStore(f"sqlite:///{db}")
    assert again.revision == head_revision()
    again.close()
    try:
        assert watch.execute("PRAGMA data_version").fetchone() == changes  # nothing was written
        assert watch.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall() == schema
    finally:
        watch.close()


def test_a_new_postgresql_store_reopened_at_head_takes_no_migration_lock(postgres: PostgresServer) -> None:
    """Replicas start fast: at head, opening reads the revision and never waits for the migration lock."""
    from leadscore.serving.migrate import _PG_LOCK_KEY

    url = postgres.database()
    store = EventStore(url)
    try:
        assert store.revision == head_revision() and _schema_drift(store) == []
    finally:
        store.close()
    holder = sa.create_engine(url)
    opened: list[str] = []
    try:
        with holder.connect() as conn:
            conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": _PG_LOCK_KEY})  # a migration "in progress"
            t = threading.Thread(target=lambda: opened.append(EventStore(url).revision))
            t.start()
            t.join(timeout=60)
            assert opened == [head_revision()], "opening a store at head waited for the migration lock"
            conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_LOCK_KEY})
        assert _rows(url, "alembic_version") == [(head_revision(),)]
    finally:
        holder.dispose()


def test_replicas_opening_a_new_store_together_migrate_it_once(store_url: str) -> None:
    url = store_url
    revisions: list[str] = []
    errors: list[BaseException] = []

    def open_store() -> None:
        try:
            store = EventStore(url)
            revisions.append(store.revision)
            store.close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and revisions == [head_revision()] * 4
    assert _rows(url, "alembic_version") == [(head_revision(),)]


def test_an_unversioned_database_that_is_not_a_known_store_is_refused(store_url: str) -> None:
    _v0_store(store_url)
    _execute(store_url, "ALTER TABLE leads ADD COLUMN nickname TEXT")
    with pytest.raises(StoreSchemaError, match="leads has columns"):
        EventStore(store_url)
    assert "alembic_version" not in _tables(store_url)  # and left as it was


def test_a_store_missing_what_the_old_release_added_at_open_is_completed(store_url: str) -> None:
    """The previous release created missing tables and its late index at every open; adoption does too."""
    _v0_store(store_url)
    _execute(store_url, "DROP INDEX ix_leads_account_lead_created", "DROP TABLE opportunities")
    store = EventStore(store_url)
    try:
        assert _schema_drift(store) == []
    finally:
        store.close()
