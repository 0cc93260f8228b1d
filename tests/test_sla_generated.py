"""SLA stages and review on a generated CRM with a really trained model, through the real CLI and MLflow.

One small CRM is generated and one model trained (one Optuna trial) for the whole module; the policy
shipped in the bundle, ``leadscore thresholds`` and ``leadscore report sla`` are then checked against it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from leadscore.config import Settings, load_settings
from tests.test_sla import naive_first_crossings, second_month

pytestmark = pytest.mark.training

REPO_CONFIGS = Path(__file__).resolve().parent.parent / "configs"
MODEL_NAME = "leadscore-sla-test"
CAPACITY = 100
OVERRIDES = [
    "training.trials=1",
    "training.bootstrap_samples=50",
    "training.minimums.min_positives=40",
    f"training.registered_model_name={MODEL_NAME}",
    f"sla.mql_policy.capacity_per_month={CAPACITY}",
]


@dataclass
class Trained:
    settings: Settings
    uri: str
    run_id: str
    calibration: pd.DataFrame
    test: pd.DataFrame
    policy: Any
    report: dict[str, Any]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    from leadscore.generate import generate_crm
    from leadscore.training.train import train

    settings = load_settings(REPO_CONFIGS, OVERRIDES)
    root = tmp_path_factory.mktemp("sla-generated")
    generate_crm(root / "crm", n_leads=3000, months=12, seed=1, settings=settings)
    result = train(root / "crm", settings, trials=1, out_dir=root / "out")
    assert result.run_id and result.model_version and result.sla_report is not None
    return Trained(
        settings=settings,
        uri=f"models:/{MODEL_NAME}/{result.model_version}",
        run_id=result.run_id,
        calibration=result.scored_calibration,
        test=result.scored_test,
        policy=result.bundle.stage_policy,
        report=result.sla_report,
    )


def _cli(*args: str) -> Any:
    from leadscore.cli import app

    return CliRunner().invoke(app, ["--config", str(REPO_CONFIGS), *(x for o in OVERRIDES for x in ("--set", o)), *args])


def test_shipped_policy_respects_capacity_on_its_months(trained: Trained) -> None:
    policy = trained.policy
    assert policy.policy["mql"]["kind"] == "capacity" and policy.policy["mql"]["met"]
    first = naive_first_crossings(trained.calibration, "p_sql", policy.mql_threshold, second_month(trained.calibration))
    monthly = first["as_of"].dt.strftime("%Y-%m").value_counts()
    assert 0 < monthly.max() <= CAPACITY
    assert policy.expected["mql"]["mqls"]["value"] == len(first)
    # Stages on real scores: every moment maps to a recommended stage.
    stages = {policy.stage(p, o, None) for p, o in zip(trained.test["p_sql"], trained.test["p_opportunity"], strict=True)}
    assert stages <= {"lead", "mql", "sql"} and "mql" in stages


@pytest.fixture(scope="module")
def cli_report(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("sla-cli") / "reports" / "sla-review.html"
    res = _cli("report", "sla", "--model", trained.uri, "--out", str(out))
    assert res.exit_code == 0, res.output
    assert "At the rule's volume" in res.output
    return json.loads(out.with_suffix(".json").read_text()), out


def test_model_beats_rule_at_equal_volume_on_generated_crm(cli_report: tuple[dict[str, Any], Path]) -> None:
    pol = cli_report[0]["policies"]
    assert pol["rule"]["mqls"]["value"] > 0
    assert pol["model_at_rule_volume"]["mqls"]["value"] == pytest.approx(pol["rule"]["mqls"]["value"], rel=0.05)
    assert pol["model_at_rule_volume"]["mql_to_sql_rate"]["value"] > pol["rule"]["mql_to_sql_rate"]["value"]
    assert pol["model"]["sql_recall"]["value"] > pol["rule_at_model_volume"]["sql_recall"]["value"]


def test_thresholds_what_if_cli(trained: Trained, tmp_path: Path) -> None:
    out = tmp_path / "what-if.json"
    res = _cli("thresholds", "--model", trained.uri, "--capacity", "40", "--json", str(out))
    assert res.exit_code == 0, res.output
    assert "MQL threshold on P(SQL)" in res.output and "what-if" in res.output
    what_if = json.loads(out.read_text())
    assert what_if["policy"]["mql"]["capacity_per_month"] == 40
    assert what_if["mql_threshold"] > trained.policy.mql_threshold  # less capacity, higher bar
    first = naive_first_crossings(trained.calibration, "p_sql", what_if["mql_threshold"], second_month(trained.calibration))
    assert first["as_of"].dt.strftime("%Y-%m").value_counts().max() <= 40
    res = _cli("thresholds", "--model", trained.uri, "--target-rate", "0.08")
    assert res.exit_code == 0, res.output
    res = _cli("thresholds", "--model", trained.uri, "--capacity", "40", "--target-rate", "0.3")
    assert res.exit_code != 0 and "choose one" in res.output


def test_report_sla_cli_writes_and_logs(trained: Trained, cli_report: tuple[dict[str, Any], Path]) -> None:
    from mlflow import MlflowClient

    data, out = cli_report
    assert data["thresholds"]["model"] == trained.policy.mql_threshold
    # The test months replayed after the calibration months (warm-up): a lead counts once, when it is new.
    full = pd.concat([trained.calibration, trained.test], ignore_index=True)
    start = trained.test["as_of"].min()
    for name, column in (("model", "p_sql"), ("rule", "rule_score")):
        first = naive_first_crossings(full, column, data["thresholds"][name], start)
        assert data["policies"][name]["mqls"]["value"] == len(first)
    assert '<section id="segments">' in out.read_text()
    assert trained.report["thresholds"]["model"] == trained.policy.mql_threshold  # train's own report
    logged = {a.path for a in MlflowClient().list_artifacts(trained.run_id, "sla_review")}
    assert logged == {"sla_review/sla-review.html", "sla_review/sla-review.json"}


def test_unknown_model_is_a_clear_error(trained: Trained, tmp_path: Path) -> None:
    res = _cli("report", "sla", "--model", f"models:/{MODEL_NAME}@nobody", "--out", str(tmp_path / "x.html"))
    assert res.exit_code == 2
    assert "cannot load" in res.output and not (tmp_path / "x.html").exists()
