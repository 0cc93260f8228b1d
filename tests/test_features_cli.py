"""``leadscore features list|build`` through Typer's CliRunner, and the built dataset's meaning."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from leadscore.cli import app
from leadscore.config import Settings, load_settings
from leadscore.features.build import build_dataset
from leadscore.features.schema import feature_names, feature_schema, schema_hash
from leadscore.features.testing import generated_crm_dir, generated_history

runner = CliRunner()
CRM = {"n_leads": 1500, "months": 8, "seed": 11}  # shared with test_features_parity (generated once)


def test_features_list(settings: Settings) -> None:
    result = runner.invoke(app, ["features", "list", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["schema_hash"] == schema_hash(settings)
    assert [f["name"] for f in data["features"]] == feature_names(settings)
    table = runner.invoke(app, ["features", "list", "--group", "fit"])
    assert table.exit_code == 0 and "email_domain_type" in table.output and "rule_score" in table.output
    bad = runner.invoke(app, ["features", "list", "--group", "nope"])
    assert bad.exit_code != 0


def test_schema_contract(settings: Settings) -> None:
    names = feature_names(settings)
    for required in ("source", "industry", "employee_band", "revenue_band", "country", "icp_match", "seniority",
                     "department", "email_domain_type", "days_since_created"):
        assert required in names
    assert len(set(names)) == len(names)
    # every column has a plain-words template: a value ({value}) or a whole sentence (flags), never its name
    for s in feature_schema(settings):
        assert s.template and "_" not in s.template, s
        assert s.unit and s.concept and s.missing, s
    # the hash follows the config that shapes the columns, not the rule's points
    assert schema_hash(load_settings(overrides=["features.windows_days=[1,7,30]"])) != schema_hash(settings)
    assert schema_hash(load_settings(overrides=["rules.mql_threshold=10"])) == schema_hash(settings)


def test_features_build_command(tmp_path, settings: Settings) -> None:
    crm = generated_crm_dir(settings, **CRM)
    out = tmp_path / "f.parquet"
    summary = tmp_path / "summary.json"
    result = runner.invoke(app, ["features", "build", "--crm", crm, "--out", str(out),
                                 "--summary-json", str(summary), "--no-progress"])
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out)
    assert list(frame.columns) == ["lead_id", "as_of", *feature_names(settings), "rule_score", "y_sql", "y_opp",
                                  "moment_weight"]
    s = json.loads(summary.read_text())
    assert s["moments"] == len(frame) > 0
    assert s["censored_sql"] == int(frame["y_sql"].isna().sum()) > 0
    # an earlier cut-off: fewer moments, nothing dated after it
    early = tmp_path / "early.parquet"
    result = runner.invoke(app, ["features", "build", "--crm", crm, "--out", str(early), "--cutoff", "2026-06-01",
                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    e = pd.read_parquet(early)
    assert 0 < len(e) < len(frame) and e["as_of"].max() <= pd.Timestamp("2026-06-01", tz="UTC")


def test_features_build_missing_dir(tmp_path) -> None:
    result = runner.invoke(app, ["features", "build", "--crm", str(tmp_path / "none"), "--out",
                                 str(tmp_path / "x.parquet"), "--no-progress"])
    assert result.exit_code == 2
    assert "not a directory" in " ".join(result.output.split())


def test_high_intent_relates_to_conversion(settings: Settings) -> None:
    history = generated_history(settings, **CRM)
    frame, summary = build_dataset(history, settings)
    assert summary.moments == len(frame) and summary.censored_sql > 0
    known = frame[frame["y_sql"].notna()]
    demo = known["n_demo_request_7d"] > 0
    rate_demo, rate_none = known.loc[demo, "y_sql"].mean(), known.loc[~demo, "y_sql"].mean()
    assert demo.sum() > 100
    assert rate_demo > 1.5 * rate_none, (rate_demo, rate_none)
    recent_hi = known["days_since_last_high_intent"] <= 7
    assert known.loc[recent_hi, "y_sql"].mean() > known.loc[known["days_since_last_high_intent"].isna(), "y_sql"].mean()
    # the rule score carries signal too (it is the baseline the model must beat)
    top = known["rule_score"] >= known["rule_score"].quantile(0.8)
    assert known.loc[top, "y_sql"].mean() > known.loc[~top, "y_sql"].mean()
    # labels never look past the cut-off: a late moment is known only when it converted, or when sales
    # answered it before the cut-off with a negative rejection reason (features.labels, issue 16)
    horizon = pd.Timedelta(days=settings.horizons.sql_days)
    late = frame["as_of"] + horizon > history.cutoff
    negative = history.stage_changes[history.stage_changes["reason"].isin(list(settings.reasons.negatives()))]
    late_known = frame[late & frame["y_sql"].notna()]
    zeros = late_known[late_known["y_sql"] == 0.0]
    assert set(late_known["y_sql"]) <= {0.0, 1.0}
    last_negative = negative.groupby("lead_id")["changed_at"].max()
    assert (zeros["lead_id"].map(last_negative) > zeros["as_of"]).all()  # every late 0 has a later negative rejection
    assert len(zeros) < len(late_known)


@pytest.mark.parametrize("field", ["lead_id", "as_of"])
def test_build_output_sorted_and_typed(settings: Settings, field: str) -> None:
    history = generated_history(settings, **CRM)
    frame, _ = build_dataset(history, settings)
    assert frame[field].notna().all()
    assert str(frame["as_of"].dtype) == "datetime64[us, UTC]"
    assert isinstance(frame.index, pd.RangeIndex)
