"""CRM history from a PostgreSQL database URL loads like its file export (``tests/test_validation.py`` on SQLite).

Two shapes of a CRM replica: every column as text (what a CSV landed by a loader holds), and PostgreSQL's
own types (``timestamptz``, ``bigint``, ``double precision``, ``boolean``, ``jsonb``), which come back
from the driver as tz-aware datetimes, numbers, booleans and dicts instead of strings.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from leadscore.config import Settings
from leadscore.history import load_history
from tests.pg_support import PostgresServer
from tests.test_validation import CUTOFF, _tables, _write

TIMESTAMPS = {"created_at", "occurred_at", "changed_at", "closed_at"}


def _settings(settings: Settings, reports: Path) -> Settings:
    return settings.model_copy(update={"paths": settings.paths.model_copy(update={"reports_dir": str(reports)})})


def _typed(name: str, rows: list[dict[str, str]]) -> tuple[pd.DataFrame, dict[str, object]]:
    """The rows with PostgreSQL's own column types (blank text is NULL)."""
    df = pd.DataFrame(rows).replace({"": None})
    types: dict[str, object] = {}
    for col in df.columns:
        if col in TIMESTAMPS:
            df[col] = pd.to_datetime(df[col], utc=True, format="mixed")
            types[col] = sa.DateTime(timezone=True)
        elif col in ("employees",):
            df[col] = pd.to_numeric(df[col]).astype("Int64")
            types[col] = sa.BigInteger()
        elif col in ("annual_revenue", "amount"):
            df[col] = pd.to_numeric(df[col])
            types[col] = sa.Float()
        elif col == "is_won":
            df[col] = df[col].map({"true": True, "false": False})
            types[col] = sa.Boolean()
        elif col == "properties":
            df[col] = df[col].map(lambda v: json.loads(v) if v else None)
            types[col] = JSONB()
    return df, types


@pytest.mark.parametrize("typed", [False, True], ids=["text", "native-types"])
def test_history_from_a_postgresql_database_matches_the_files(tmp_path: Path, settings: Settings,
                                                              postgres: PostgresServer, typed: bool) -> None:
    tables = _tables()
    tables["activities"].append({"activity_id": "A9", "lead_id": "L404", "occurred_at": "2025-03-08T09:00:00Z",
                                 "type": "page_view", "properties": "{}"})
    files, _ = load_history(_write(tmp_path / "crm", tables), settings, cutoff=CUTOFF)
    url = postgres.database("crm")
    engine = sa.create_engine(url)
    try:
        for name, rows in tables.items():
            df, types = _typed(name, rows) if typed else (pd.DataFrame(rows), {})
            df.to_sql(name, engine, index=False, dtype=types)  # type: ignore[arg-type]
        if typed:
            with engine.connect() as conn:
                kinds = dict(conn.execute(sa.text("SELECT column_name, data_type FROM information_schema.columns "
                                                  "WHERE table_name = 'activities'")).all())
            assert kinds["occurred_at"] == "timestamp with time zone" and kinds["properties"] == "jsonb"
    finally:
        engine.dispose()
    reports = tmp_path / "reports"
    db, report = load_history(url, _settings(settings, reports), cutoff=CUTOFF)
    for name in ("accounts", "leads", "activities", "stage_changes", "opportunities"):
        pd.testing.assert_frame_equal(db.table(name), files.table(name), check_like=True)
    assert report.tables["activities"].rejected_rows == 1
    assert pd.read_parquet(reports / "_rejected" / "activities.parquet")["reason"].str.contains("lead_id").all()
