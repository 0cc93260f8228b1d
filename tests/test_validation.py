"""CRM history validation: each kind of bad row is rejected with its reason; nothing is lost."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from leadscore.cli import app
from leadscore.config import Settings
from leadscore.history import load_history

CUTOFF = "2026-06-01T00:00:00Z"


def _tables() -> dict[str, list[dict[str, str]]]:
    """A tiny, fully valid CRM as text (what a CSV export holds)."""
    return {
        "accounts": [
            {"account_id": "C1", "name": "Acme", "domain": "acme.com", "industry": "software",
             "employees": "120", "annual_revenue": "1000000", "country": "US", "created_at": "2025-01-01T00:00:00Z"},
            {"account_id": "C2", "name": "Beta", "domain": "beta.de", "industry": "retail",
             "employees": "40", "annual_revenue": "", "country": "DE", "created_at": "2025-02-01"},
        ],
        "leads": [
            {"lead_id": "L1", "account_id": "C1", "email_domain": "acme.com", "job_title": "Head of Marketing",
             "seniority": "", "department": "", "country": "US", "source": "organic_search", "created_at": "2025-03-01T10:00:00Z"},
            {"lead_id": "L2", "account_id": "", "email_domain": "gmail.com", "job_title": "Directora de Ventas",
             "seniority": "", "department": "", "country": "ES", "source": "social", "created_at": "2025-03-02T10:00:00Z"},
        ],
        "activities": [
            {"activity_id": "A1", "lead_id": "L1", "occurred_at": "2025-03-05T09:00:00Z", "type": "page_view", "properties": "{}"},
            {"activity_id": "A2", "lead_id": "L1", "occurred_at": "2025-03-06T09:00:00Z", "type": "pricing_page_view", "properties": ""},
            {"activity_id": "A3", "lead_id": "L2", "occurred_at": "2025-03-07 09:00:00+02:00", "type": "Demo_Request", "properties": "{}"},
        ],
        "stage_changes": [
            {"lead_id": "L1", "stage": "lead", "changed_at": "2025-03-01T10:00:00Z", "set_by": "rule"},
            {"lead_id": "L1", "stage": "mql", "changed_at": "2025-03-06T10:00:00Z", "set_by": "rule"},
        ],
        "opportunities": [
            {"opportunity_id": "O1", "lead_id": "L1", "account_id": "C1", "created_at": "2025-04-01T00:00:00Z",
             "stage": "closed_won", "amount": "5000", "closed_at": "2025-05-01T00:00:00Z", "is_won": "true"},
        ],
    }


def _write(directory: Path, tables: dict[str, list[dict[str, str]]]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, rows in tables.items():
        pd.DataFrame(rows).to_csv(directory / f"{name}.csv", index=False)
    return directory


def test_valid_history_loads_completely(tmp_path: Path, settings: Settings) -> None:
    history, report = load_history(_write(tmp_path / "crm", _tables()), settings, cutoff=CUTOFF)
    assert report.usable
    assert {n: t.rejected_rows for n, t in report.tables.items()} == dict.fromkeys(report.tables, 0)
    assert len(history.activities) == 3
    assert history.activities["type"].tolist() == ["page_view", "pricing_page_view", "demo_request"]
    # a +02:00 offset is converted to UTC
    assert history.activities["occurred_at"].iloc[2] == pd.Timestamp("2025-03-07T07:00:00Z")
    assert str(history.activities["occurred_at"].dtype) == "datetime64[us, UTC]"
    assert history.opportunities["is_won"].iloc[0]
    assert history.cutoff == pd.Timestamp(CUTOFF)


BAD_ROWS = [
    # (table, row changes or a whole extra row, expected reason)
    ("activities", {"activity_id": ""}, "empty required field activity_id"),
    ("activities", {"activity_id": "A1"}, "duplicate activity_id"),
    ("activities", {"occurred_at": "yesterday-ish"}, "unparseable timestamp in occurred_at"),
    ("activities", {"occurred_at": "2027-01-01T00:00:00Z"}, "occurred_at after the data cut-off"),
    ("activities", {"lead_id": "L999"}, "unknown lead_id"),
    ("stage_changes", {"stage": "hot_prospect"}, "unknown stage"),
    ("stage_changes", {"set_by": "robot"}, "unknown set_by"),
    ("stage_changes", {"stage": "lead", "changed_at": "2025-03-01T10:00:00Z"}, "duplicate key"),
    ("opportunities", {"amount": "-10"}, "negative amount"),
    ("opportunities", {"closed_at": "2025-03-01T00:00:00Z"}, "closed_at before created_at"),
    ("opportunities", {"is_won": "maybe"}, "unparseable value in is_won"),
    ("accounts", {"employees": "lots"}, "unparseable value in employees"),
    ("leads", {"created_at": ""}, "empty required field created_at"),
    ("leads", {"account_id": "C404"}, "unknown account_id"),
    ("activities", {"properties": "not json"}, "properties is not a JSON object"),
]


@pytest.mark.parametrize(("table", "change", "reason"), BAD_ROWS, ids=[r[2] for r in BAD_ROWS])
def test_each_kind_of_bad_row_is_rejected_with_its_reason(
    tmp_path: Path, settings: Settings, table: str, change: dict[str, str], reason: str
) -> None:
    tables = _tables()
    bad = {**tables[table][0], **change}
    key = {"accounts": "account_id", "leads": "lead_id", "activities": "activity_id", "opportunities": "opportunity_id"}
    if table in key and key[table] not in change:
        bad[key[table]] = "BAD1"
    tables[table].append(bad)
    directory = _write(tmp_path / "crm", tables)
    history, report = load_history(directory, settings, cutoff=CUTOFF)
    t = report.tables[table]
    assert t.rejected_rows == 1, t.reasons
    matching = [r for r in t.reasons if r.startswith(reason)]
    assert matching, t.reasons
    assert t.examples[matching[0]]
    # valid + rejected = input, for every table
    for r in report.tables.values():
        assert r.valid_rows + r.rejected_rows == r.input_rows
    rejected = pd.read_parquet(directory / "_rejected" / f"{table}.parquet")
    assert len(rejected) == 1 and reason in rejected["reason"].iloc[0]
    assert len(history.table(table)) == len(tables[table]) - 1


def test_rejected_parent_rejects_its_children(tmp_path: Path, settings: Settings) -> None:
    tables = _tables()
    tables["leads"][1]["created_at"] = "not a date"
    _, report = load_history(_write(tmp_path / "crm", tables), settings, cutoff=CUTOFF)
    assert report.tables["leads"].rejected_rows == 1
    assert report.tables["activities"].reasons == {"unknown lead_id": 1}


def test_unknown_activity_type_is_kept_as_other(tmp_path: Path, settings: Settings) -> None:
    tables = _tables()
    tables["activities"][0]["type"] = "chatbot_conversation"
    history, report = load_history(_write(tmp_path / "crm", tables), settings, cutoff=CUTOFF)
    assert report.tables["activities"].rejected_rows == 0
    assert history.activities["type"].iloc[0] == "other"
    assert any("unknown type" in note for note in report.tables["activities"].notes)


def test_missing_required_column_makes_the_table_unusable(tmp_path: Path, settings: Settings) -> None:
    tables = _tables()
    for row in tables["activities"]:
        del row["occurred_at"]
    directory = _write(tmp_path / "crm", tables)
    _, report = load_history(directory, settings, cutoff=CUTOFF)
    assert not report.usable
    assert "occurred_at" in (report.tables["activities"].unusable or "")
    assert report.tables["activities"].rejected_rows == 3
    result = CliRunner().invoke(app, ["validate", str(directory), "--cutoff", CUTOFF])
    assert result.exit_code == 1
    assert "unusable" in result.output


def test_validate_cli_reports_counts_and_reasons(tmp_path: Path) -> None:
    tables = _tables()
    tables["activities"].append({**tables["activities"][0], "activity_id": "A9", "lead_id": "L404"})
    directory = _write(tmp_path / "crm", tables)
    out_json = tmp_path / "report.json"
    result = CliRunner().invoke(app, ["validate", str(directory), "--cutoff", CUTOFF, "--json", str(out_json)])
    assert result.exit_code == 0, result.output
    assert "unknown lead_id" in result.output
    data = json.loads(out_json.read_text())
    assert data["tables"]["activities"]["rejected_rows"] == 1
    assert data["tables"]["activities"]["valid_rows"] == 3


def test_cutoff_comes_from_the_manifest(tmp_path: Path, settings: Settings) -> None:
    directory = _write(tmp_path / "crm", _tables())
    (directory / "manifest.json").write_text(json.dumps({"cutoff": "2025-03-06T12:00:00Z"}))
    history, report = load_history(directory, settings)
    assert history.cutoff == pd.Timestamp("2025-03-06T12:00:00Z")
    assert report.tables["activities"].reasons == {"occurred_at after the data cut-off 2025-03-06T12:00:00+00:00": 1}


def test_history_from_a_database_url_matches_the_files(tmp_path: Path, settings: Settings) -> None:
    """A CRM replica in a SQL database loads like its export: same rows, same rejections, report aside."""
    from sqlalchemy import create_engine

    tables = _tables()
    tables["activities"].append({"activity_id": "A9", "lead_id": "L404", "occurred_at": "2025-03-08T09:00:00Z",
                                 "type": "page_view", "properties": "{}"})
    files, _ = load_history(_write(tmp_path / "crm", tables), settings, cutoff=CUTOFF)
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    engine = create_engine(url)
    for name, rows in tables.items():
        pd.DataFrame(rows).to_sql(name, engine, index=False)
    engine.dispose()
    reports = tmp_path / "reports"
    db_settings = settings.model_copy(update={"paths": settings.paths.model_copy(update={"reports_dir": str(reports)})})
    db, report = load_history(url, db_settings, cutoff=CUTOFF)
    for name in ("accounts", "leads", "activities", "stage_changes", "opportunities"):
        pd.testing.assert_frame_equal(db.table(name), files.table(name), check_like=True)
    assert report.tables["activities"].rejected_rows == 1
    assert pd.read_parquet(reports / "_rejected" / "activities.parquet")["reason"].str.contains("lead_id").all()
    with pytest.raises(Exception, match="cannot open the CRM database"):
        load_history("postgresql+nosuchdriver://nobody@localhost/crm", settings)
