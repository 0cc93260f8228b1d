"""The generated CRM: deterministic, calibrated to its funnel rates, with a predictive ground truth."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from leadscore.cli import app
from leadscore.config import Settings
from leadscore.generate import generate_crm
from leadscore.history import load_history


@pytest.fixture(scope="module")
def crm_5k(tmp_path_factory: pytest.TempPathFactory, settings: Settings) -> tuple[Path, dict[str, object]]:
    out = tmp_path_factory.mktemp("crm5k")
    return out, generate_crm(out, n_leads=5000, months=12, seed=1, settings=settings)


def _digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.glob("*.parquet"))}


def test_same_seed_same_files(tmp_path: Path, settings: Settings) -> None:
    generate_crm(tmp_path / "a", n_leads=400, months=6, seed=5, settings=settings)
    generate_crm(tmp_path / "b", n_leads=400, months=6, seed=5, settings=settings)
    generate_crm(tmp_path / "c", n_leads=400, months=6, seed=6, settings=settings)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a")["activities.parquet"] != _digest(tmp_path / "c")["activities.parquet"]


def test_generated_history_is_valid(crm_5k: tuple[Path, dict[str, object]], settings: Settings) -> None:
    directory, summary = crm_5k
    history, report = load_history(directory, settings, write_rejected=False)
    assert report.usable
    assert all(t.rejected_rows == 0 for t in report.tables.values()), report.to_dict()
    assert len(history.activities) == summary["activities"]
    assert 60 < len(history.activities) / len(history.leads) < 140
    assert set(history.activities["type"]) <= set(settings.activity_names)
    titles = history.leads["job_title"].dropna()
    assert titles.str.contains("Responsabile").any() and titles.str.contains("Directora de").any()
    assert set(history.stage_changes["stage"]) >= {"lead", "mql", "sql", "opportunity", "customer", "recycled", "disqualified"}


def test_funnel_rates_match_the_configuration(crm_5k: tuple[Path, dict[str, object]], settings: Settings) -> None:
    directory, _ = crm_5k
    history, _ = load_history(directory, settings, write_rejected=False)
    sc = history.stage_changes
    leads_with = {s: set(sc.loc[sc["stage"] == s, "lead_id"]) for s in ("mql", "sql")}
    n = len(history.leads)
    opps = history.opportunities
    closed = opps[opps["is_won"].notna()]
    realised = {
        "lead_to_mql": len(leads_with["mql"]) / n,
        "mql_to_sql": len(leads_with["sql"] & leads_with["mql"]) / len(leads_with["mql"]),
        "sql_to_opportunity": opps["lead_id"].nunique() / len(leads_with["sql"]),
        "opportunity_to_won": float(closed["is_won"].astype(bool).mean()),
    }
    g = settings.generator
    for key, value in realised.items():
        target = getattr(g, key)
        assert abs(value - target) <= 0.2 * target, (key, value, target)


def test_ground_truth_is_a_probability_and_predicts_what_happened(
    crm_5k: tuple[Path, dict[str, object]], settings: Settings
) -> None:
    directory, _ = crm_5k
    history, _ = load_history(directory, settings, write_rejected=False)
    truth = pd.read_parquet(directory / "ground_truth.parquet")
    assert truth[["p_sql_30d", "p_opp_90d"]].apply(lambda c: c.between(0, 1).all()).all()
    assert (truth["p_opp_90d"] <= 1).all() and truth["p_sql_30d"].notna().all()
    sc = history.stage_changes
    sql_at = sc[sc["stage"].isin(["sql", "opportunity", "customer"])].groupby("lead_id")["changed_at"].min()
    acts = history.activities.sample(60_000, random_state=0)
    acts = acts.assign(sql_at=acts["lead_id"].map(sql_at))
    acts = acts[acts["sql_at"].isna() | (acts["sql_at"] > acts["occurred_at"])]
    horizon = pd.Timedelta(days=settings.horizons.sql_days)
    acts = acts[acts["occurred_at"] + horizon <= history.cutoff]  # matured moments only
    y = (acts["sql_at"].notna() & (acts["sql_at"] <= acts["occurred_at"] + horizon)).to_numpy()
    moments = acts.assign(day=acts["occurred_at"].dt.floor("D"))[["lead_id", "day"]]
    truth["day"] = truth["day"].dt.as_unit("us")
    joined = moments.merge(truth, on=["lead_id", "day"], how="left")
    assert joined["p_sql_30d"].notna().all()
    auc = roc_auc_score(y, joined["p_sql_30d"])
    assert auc >= 0.8, auc
    assert np.isclose(joined["p_sql_30d"].mean(), y.mean(), rtol=0.35)


def test_generate_and_validate_cli(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "crm"
    result = runner.invoke(app, ["generate", "--out", str(out), "--leads", "300", "--months", "4", "--seed", "2"])
    assert result.exit_code == 0, result.output
    assert "lead_to_mql" in result.output
    result = runner.invoke(app, ["validate", str(out)])
    assert result.exit_code == 0, result.output
    assert "activities" in result.output and "ok" in result.output
