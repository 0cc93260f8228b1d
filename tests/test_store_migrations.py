"""The event store is versioned: a store of the previous release upgrades in place; new stores start at head.

``tests/data/event_store_v0.db`` was written by the store code of the release before migrations
(commit 5212ef7, ``metadata.create_all`` plus its hand-kept index): two leads of one account, four
activities, a stage change, an opportunity and two scores, then checkpointed out of WAL mode.
"""

from __future__ import annotations

import shutil
import sqlite3
import threading
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from leadscore.config import Settings
from leadscore.features.schema import FIT_NUMERIC
from leadscore.serving.migrate import BASELINE, StoreSchemaError, head_revision, store_revision
from leadscore.serving.store import EventStore, StoredScore
from leadscore.serving.store_tables import metadata

V0_STORE = Path(__file__).parent / "data" / "event_store_v0.db"
T0 = pd.Timestamp("2026-03-01T09:00:00Z")


def _copy_v0(tmp_path: Path) -> Path:
    db = tmp_path / "events.db"
    shutil.copy(V0_STORE, db)
    return db


def _rows(db: Path, table: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()


def _schema_drift(store: EventStore) -> list[object]:
    """What Alembic would still have to change for the store to equal the table specs (nothing, at head)."""
    with store.read() as conn:
        return list(compare_metadata(MigrationContext.configure(conn), metadata))


def test_store_of_the_previous_release_upgrades_in_place(tmp_path: Path, settings: Settings) -> None:
    db = _copy_v0(tmp_path)
    with sqlite3.connect(db) as conn:
        assert "alembic_version" not in {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    before = {t: _rows(db, t) for t in ("accounts", "leads", "activities", "stage_changes", "opportunities", "scores")}
    assert [len(before[t]) for t in before] == [1, 2, 4, 1, 1, 2]

    store = EventStore(f"sqlite:///{db}")
    try:
        assert store.revision == head_revision() != BASELINE
        with store.read() as conn:
            assert store_revision(conn) == head_revision()
        assert _schema_drift(store) == []
        # every old row is still there, unchanged; the old scores have no band
        for table, rows in before.items():
            after = _rows(db, table)
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


def test_replicas_opening_a_new_store_together_migrate_it_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
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
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM alembic_version").scalar_one() == 1
    engine.dispose()


def test_an_unversioned_database_that_is_not_a_known_store_is_refused(tmp_path: Path) -> None:
    db = _copy_v0(tmp_path)
    with sqlite3.connect(db) as conn:
        conn.execute("ALTER TABLE leads ADD COLUMN nickname TEXT")
    with pytest.raises(StoreSchemaError, match="leads has columns"):
        EventStore(f"sqlite:///{db}")
    with sqlite3.connect(db) as conn:  # and left as it was
        assert "alembic_version" not in {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}


def test_a_store_missing_what_the_old_release_added_at_open_is_completed(tmp_path: Path) -> None:
    """The previous release created missing tables and its late index at every open; adoption does too."""
    db = _copy_v0(tmp_path)
    with sqlite3.connect(db) as conn:
        conn.execute("DROP INDEX ix_leads_account_lead_created")
        conn.execute("DROP TABLE opportunities")
    store = EventStore(f"sqlite:///{db}")
    try:
        assert _schema_drift(store) == []
    finally:
        store.close()
