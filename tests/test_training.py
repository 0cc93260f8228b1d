"""Training on a small generated CRM, end to end through a real MLflow SQLite store and registry.

One retrain is shared by the module (a few Optuna trials, fewer bootstrap samples); every check runs
against the real artifacts it produced: the registered pyfunc, the bundle, the promotion gate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from typer.testing import CliRunner

from leadscore.config import Settings, load_settings
from leadscore.training.split import InsufficientDataError

REPO = Path(__file__).resolve().parent.parent
N_LEADS, MONTHS, SEED = 2000, 12, 1
# Its own registry name: other modules (serving) promote `leadscore` in the same session store, and the
# first-model gate ("beats the rule") is only exercised when this module starts from no champion.
MODEL_NAME = "leadscore-training-test"

pytestmark = pytest.mark.training


def small_settings(extra: list[str] | None = None) -> Settings:
    """Test-sized training: few trials, short boosting, lowered minimums for a 2,000-lead CRM."""
    return load_settings(REPO / "configs", [
        "training.trials=3",
        "training.bootstrap_samples=40",
        "training.lightgbm.max_rounds=300",
        "training.lightgbm.early_stopping_rounds=20",
        "training.minimums.min_moments=500",
        "training.minimums.min_positives=30",
        f"training.registered_model_name={MODEL_NAME}",
        # the promotion tests promote at the training cut-off: only a backtest model leaves a month unseen
        # (the refit is tested in test_model_choice.py and test_regime_shift.py)
        "training.refit=none",
        *(extra or []),
    ])


@dataclass
class Trained:
    settings: Settings
    crm_dir: Path
    dataset: pd.DataFrame
    cutoff: pd.Timestamp
    result: object  # training.train.TrainResult


@pytest.fixture(scope="module")
def trained() -> Trained:
    from leadscore.features.build import build_dataset
    from leadscore.features.schema import feature_schema, schema_hash
    from leadscore.features.testing import generated_crm_dir
    from leadscore.history import load_history
    from leadscore.training.train import GROUND_TRUTH_FILE, train_from_dataset

    settings = small_settings()
    crm = Path(generated_crm_dir(settings, N_LEADS, MONTHS, SEED))
    history, _ = load_history(crm, settings)
    dataset, _ = build_dataset(history, settings)
    result = train_from_dataset(dataset, feature_schema(settings), settings, history.cutoff,
                                schema_hash=schema_hash(settings), truth=pd.read_parquet(crm / GROUND_TRUTH_FILE))
    return Trained(settings, crm, dataset, history.cutoff, result)


def _metric(trained: Trained, target: str, model: str, metric: str) -> float:
    return float(trained.result.targets[target].metrics[model][metric].value)  # type: ignore[attr-defined]


def test_model_beats_rule_on_sql(trained: Trained) -> None:
    model = _metric(trained, "sql", "lightgbm", "roc_auc")
    rule = _metric(trained, "sql", "rule", "roc_auc")
    truth = _metric(trained, "sql", "ground_truth", "roc_auc")
    assert model > rule + 0.03, (model, rule)
    assert model < truth + 0.02  # the ceiling is a ceiling
    tr = trained.result.targets["sql"]  # type: ignore[attr-defined]
    assert tr.share_of_ceiling_lift is not None and 0 < tr.share_of_ceiling_lift < 1.1
    for ci in tr.metrics["lightgbm"].values():
        assert ci.lo <= ci.value <= ci.hi or np.isnan(ci.value)


def test_calibration_lowers_brier_on_test_months(trained: Trained) -> None:
    for target in ("sql", "opportunity"):
        calibrated = _metric(trained, target, "lightgbm", "brier")
        raw = _metric(trained, target, "lightgbm_uncalibrated", "brier")
        assert calibrated < raw, (target, calibrated, raw)


def test_splits_are_by_time_and_disjoint(trained: Trained) -> None:
    for target, tr in trained.result.targets.items():  # type: ignore[attr-defined]
        s = tr.split
        assert s.train_start < s.validation_start < s.calibration_start < s.test_start < s.test_end
        horizon = trained.settings.horizons.sql_days if target == "sql" else trained.settings.horizons.opp_days
        assert s.test_end + pd.Timedelta(days=horizon) <= trained.cutoff + pd.Timedelta(days=31)
        assert s.test_end <= trained.cutoff - pd.Timedelta(days=horizon)


def test_artifacts_and_scored_frames_logged(trained: Trained) -> None:
    import mlflow

    from leadscore.training.registry import load_scored

    result = trained.result
    run = mlflow.get_run(result.run_id)  # type: ignore[attr-defined]
    assert run.data.tags["config_hash"] == trained.settings.config_hash()
    assert "git_commit" in run.data.tags and "backtest.sql.shipped.roc_auc.ci_lo" in run.data.metrics
    # the sample's ECE and the population's (every eligible moment), named apart
    assert {"backtest.sql.shipped.ece", "backtest.sql.shipped.population.ece"} <= set(run.data.metrics)
    assert "drift.json" in {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert any(k.startswith("drift.psi.") for k in run.data.metrics)
    assert run.data.params["sql.registered"] == "backtest"
    names = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"calibration.png", "feature_importance.png", "shap_summary.png", "metrics.csv", "scored"} <= names
    trials = mlflow.search_runs([run.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{run.info.run_id}'")
    assert len(trials) == 2 * trained.settings.training.trials
    cal, test = load_scored(f"models:/{MODEL_NAME}/{result.model_version}", trained.settings)  # type: ignore[attr-defined]
    assert list(test.columns) == ["lead_id", "as_of", "p_sql", "p_opportunity", "rule_score", "y_sql", "y_opp",
                                  "source", "industry", "employee_band", "days_since_created"]
    assert cal["as_of"].max() < test["as_of"].min()


def test_summary_json_and_printed_verdict(trained: Trained, tmp_path: Path) -> None:
    import json

    from rich.console import Console

    from leadscore.training.cli import print_results, write_summary

    result = trained.result
    write_summary(result, tmp_path / "summary.json")  # type: ignore[arg-type]
    doc = json.loads((tmp_path / "summary.json").read_text())
    assert set(doc) == {"targets", "drift"} and set(doc["targets"]) == {"sql", "opportunity"}
    for entry in doc["targets"].values():
        assert entry["shipped"]["model"] in ("lightgbm", "logistic", "blend")
        for model in ("shipped", "logistic", "rule"):
            assert {"roc_auc", "log_loss", "ece"} <= set(entry[model])
            assert all(isinstance(v, float) for k, v in entry[model].items() if k != "model")
        assert entry["metrics_describe"].startswith("backtest") and isinstance(entry["beats_rule"], bool)
        # the sample's figures and, beside them, the same over every eligible moment (moment weights)
        assert "sampled" in entry["rows_describe"] and "moment_weight" in entry["population"]["rows_describe"]
        for model in ("shipped", "logistic", "rule"):
            assert {"roc_auc", "log_loss", "ece", "mean_p", "rate"} <= set(entry["population"][model])
    assert {"features", "label_rate", "reference_months", "scoring_months"} <= set(doc["drift"])
    assert {"feature", "psi", "outside_range"} == set(doc["drift"]["features"][0])
    for flat in (False, True):
        console = Console(record=True, width=400)
        print_results(result, console, flat=flat)  # type: ignore[arg-type]
        text = console.export_text()
        assert "drift of the test months against the training rows (PSI)" in text
        assert "shipped over every eligible test moment (weighted by moment_weight)" in text
        beats = all(ok for ok, _ in result.verdicts.values())  # type: ignore[attr-defined]
        assert ("leadscore promote" in text) == (beats and not flat)
    # a losing model: one verdict line naming the drift, no promotion suggested
    losing = dict(result.verdicts)  # type: ignore[attr-defined]
    result.verdicts = {**losing, "sql": (False, "sql: the shipped lightgbm model does not beat the rule score")}  # type: ignore[attr-defined]
    try:
        console = Console(record=True, width=400)
        print_results(result, console)  # type: ignore[arg-type]
        text = console.export_text()
        assert "does not beat the rule score" in text and "leadscore promote" not in text
    finally:
        result.verdicts = losing  # type: ignore[attr-defined]


def test_promote_then_pyfunc_champion_predicts_like_bundle(trained: Trained) -> None:
    import mlflow

    from leadscore.training.promote import promote
    from leadscore.training.registry import load_bundle

    decision = promote(trained.settings, trained.crm_dir)
    assert decision.promoted, decision.reason
    assert "beats the rule" in decision.reason
    bundle = load_bundle(f"models:/{MODEL_NAME}@champion", trained.settings)
    assert bundle.version == trained.result.model_version  # type: ignore[attr-defined]
    rows = trained.dataset.sample(300, random_state=0)
    expected = bundle.predict(rows)
    pyfunc = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@champion")
    got = pyfunc.predict(rows[bundle.feature_names])
    np.testing.assert_allclose(got[["p_sql", "p_opportunity"]].to_numpy(), expected.to_numpy(), rtol=0, atol=1e-12)
    # the one-row fast path agrees with the batch path
    row = rows.iloc[0].to_dict()
    fast = bundle.predict_row(row)
    assert fast["p_sql"] == pytest.approx(expected.iloc[0]["p_sql"], abs=1e-12)
    reasons = bundle.reasons(row)
    assert set(reasons) == {"positive", "negative"} and all(isinstance(t, str) for t in reasons["positive"])


def test_shuffled_labels_refused_by_promote(trained: Trained) -> None:
    from leadscore.features.schema import feature_schema, schema_hash
    from leadscore.training.promote import promote
    from leadscore.training.train import train_from_dataset

    ds = trained.dataset.copy()
    rng = np.random.default_rng(0)
    for label in ("y_sql", "y_opp"):
        known = ds[label].notna().to_numpy()
        ds.loc[known, label] = rng.permutation(ds.loc[known, label].to_numpy())
    settings = trained.settings
    _ensure_champion(trained)  # before the shuffled model is registered: promote takes the newest version
    shuffled = train_from_dataset(ds, feature_schema(settings), settings, trained.cutoff,
                                  schema_hash=schema_hash(settings))
    champion_before = _champion(settings)
    decision = promote(settings, dataset=trained.dataset, cutoff=trained.cutoff)
    assert not decision.promoted
    assert decision.challenger == shuffled.model_version
    assert decision.numbers["challenger.roc_auc"] < decision.numbers["champion.roc_auc"] - 0.005
    assert _champion(settings) == champion_before


def _champion(settings: Settings) -> str:
    from mlflow import MlflowClient

    return str(MlflowClient().get_model_version_by_alias(settings.training.registered_model_name, "champion").version)


def _has_champion(settings: Settings) -> bool:
    try:
        _champion(settings)
    except MlflowException:
        return False
    return True


def _ensure_champion(trained: Trained) -> None:
    """A champion for the tests that compare against one. The module's first promotion may have run in
    another test process (pytest-xdist spreads this module's tests, each process with its own fixture
    and registry), so promote the fixture's model here if no champion exists yet."""
    from leadscore.training.promote import promote

    if not _has_champion(trained.settings):
        decision = promote(trained.settings, dataset=trained.dataset, cutoff=trained.cutoff)
        assert decision.promoted and decision.challenger == trained.result.model_version, decision.reason  # type: ignore[attr-defined]


def test_same_seed_same_predictions_and_rollback(trained: Trained, tmp_path: Path) -> None:
    import mlflow

    from leadscore.features.schema import feature_schema, schema_hash
    from leadscore.training.promote import promote, rollback
    from leadscore.training.pyfunc import log_bundle_model
    from leadscore.training.tracking import ensure_experiment
    from leadscore.training.train import train_from_dataset

    settings = trained.settings
    again = train_from_dataset(trained.dataset, feature_schema(settings), settings, trained.cutoff,
                               schema_hash=schema_hash(settings), log_to_mlflow=False)
    first = trained.result.bundle  # type: ignore[attr-defined]
    rows = trained.dataset
    pd.testing.assert_frame_equal(again.bundle.predict(rows), first.predict(rows))  # bit-identical
    # register the identical retrain, promote it (equal AUC is within tolerance), then roll back
    _ensure_champion(trained)
    before = _champion(settings)
    again.bundle.save(tmp_path / "bundle")
    with mlflow.start_run(experiment_id=ensure_experiment("leadscore-tests", settings)):
        _, version = log_bundle_model(again.bundle, tmp_path / "bundle", again.example, settings)
    decision = promote(settings, dataset=trained.dataset, cutoff=trained.cutoff)
    assert decision.promoted, decision.reason
    assert _champion(settings) == version
    back = rollback(settings)
    assert back.action == "rollback" and _champion(settings) == before


def test_too_little_data_names_what_is_missing(trained: Trained) -> None:
    from leadscore.features.schema import feature_schema, schema_hash
    from leadscore.training.train import train_from_dataset

    strict = load_settings(REPO / "configs", ["training.minimums.min_positives=100000"])
    with pytest.raises(InsufficientDataError) as info:
        train_from_dataset(trained.dataset, feature_schema(strict), strict, trained.cutoff,
                           schema_hash=schema_hash(strict), log_to_mlflow=False)
    msg = str(info.value)
    assert "sql model" in msg and "opportunity model" in msg
    assert "need at least 100000" in msg and "rule-based score stays in force" in msg


def test_cli_train_minimums_message_and_exit_code(tmp_path: Path) -> None:
    from leadscore.cli import app
    from leadscore.generate import generate_crm

    settings = load_settings(REPO / "configs")
    generate_crm(tmp_path / "crm", n_leads=300, months=9, seed=3, settings=settings)
    out = CliRunner().invoke(app, ["--config", str(REPO / "configs"), "train", "--crm", str(tmp_path / "crm")])
    assert out.exit_code == 3, out.output
    assert "rule-based score stays in force" in out.output
