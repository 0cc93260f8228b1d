"""What a retrain leaves behind: the run's artifacts on disk and its MLflow record.

Kept apart from :mod:`training.train` (the procedure) because it is presentation: plots, tables, the
SLA report and the logged metrics describe a :class:`~training.train.TrainResult`, they change nothing
in it except the paths and the registered version they add.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from leadscore.config import Settings
from leadscore.training.split import TARGETS

if TYPE_CHECKING:
    from leadscore.training.bundle import FeatureColumn
    from leadscore.training.train import ProgressFn, TrainResult


def trial_logger(target: str, progress: ProgressFn | None, log: bool, run: Any) -> Callable[[dict[str, Any]], None]:
    """Per Optuna trial: a nested MLflow run under ``run`` (when logging) and a progress event."""
    def on_trial(rec: dict[str, Any]) -> None:
        if log and run is not None:
            import mlflow

            # the experiment must be named: a nested run otherwise lands in the default experiment
            with mlflow.start_run(run_name=f"{target} trial {rec['number']}", nested=True,
                                  experiment_id=run.info.experiment_id):
                mlflow.set_tags({"leadscore.kind": "trial", "target": target, "state": rec["state"]})
                mlflow.log_params(rec["params"])
                if rec["value"] is not None:
                    mlflow.log_metric("validation_log_loss", rec["value"])
                if rec["rounds"] is not None:
                    mlflow.log_metric("rounds", rec["rounds"])
        if progress is not None:
            progress("trial", (target, rec))

    return on_trial


def write_artifacts(result: TrainResult, dataset: pd.DataFrame, spec: list[FeatureColumn], settings: Settings,
                    work: Path) -> None:
    """The bundle, scored frames, metrics, trials, plots and SLA report under ``work``."""
    from leadscore.training.plots import calibration_plot, importance_plot, shap_summary_plot

    work.mkdir(parents=True, exist_ok=True)
    result.bundle.save(work / "bundle")
    (work / "scored").mkdir(exist_ok=True)
    result.scored_calibration.to_parquet(work / "scored" / "calibration.parquet", index=False)
    result.scored_test.to_parquet(work / "scored" / "test.parquet", index=False)
    table = result.metrics_table()
    table.to_csv(work / "metrics.csv", index=False)
    (work / "metrics.html").write_text(table.to_html(index=False, float_format=lambda v: f"{v:.4f}"))
    trials = [{"target": t, **rec} for t, r in result.targets.items() for rec in r.tune.trials]
    (work / "trials.json").write_text(json.dumps(trials, indent=1, default=str))
    curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    contribs: dict[str, tuple[pd.DataFrame, pd.DataFrame]] = {}
    for target, tr in result.targets.items():
        label = TARGETS[target]
        rows = dataset[tr.split.mask(dataset["as_of"], "test") & dataset[label].notna().to_numpy()]
        y = rows[label].to_numpy(dtype=np.float64)
        # the backtest's model on its test months (the shipped refit was fitted on them)
        backtest = result.backtest or result.bundle
        raw = backtest.predict_raw(rows, target)
        curves[target] = {"uncalibrated": (y, raw), "calibrated": (y, tr.model.calibrator(raw))}
        sample = rows.sample(n=min(2000, len(rows)), random_state=settings.training.seed)
        X = pd.DataFrame(backtest.encode(sample, target), columns=[s["name"] for s in spec], index=sample.index)
        contribs[target] = (backtest.contributions(sample, target), X)
    calibration_plot(curves, work / "calibration.png")
    importance_plot({t: r.importance for t, r in result.targets.items()}, work / "feature_importance.png")
    shap_summary_plot(contribs, work / "shap_summary.png")
    (work / "drift.json").write_text(json.dumps(result.drift, indent=1))
    (work / "summary.json").write_text(json.dumps(summary(result), indent=1))
    report = build_report(result, settings, work)
    result.sla_report = report
    result.artifacts = sorted(str(p.relative_to(work)) for p in work.rglob("*") if p.is_file())


def build_report(result: TrainResult, settings: Settings, work: Path) -> dict[str, Any] | None:
    """The SLA engineer's report on the test months, written next to the other artifacts."""
    if result.bundle.stage_policy is None:
        return None
    try:
        from leadscore.training.report import build_sla_report
    except ImportError:
        return None
    out = work / "sla_report" / "sla_report.html"
    out.parent.mkdir(exist_ok=True)
    # the calibration months' scored moments tell the replay which leads were already MQL
    report: dict[str, Any] = build_sla_report(result.scored_test, result.bundle.stage_policy, settings, out,
                                              warmup=result.scored_calibration, drift=result.drift or None)
    return report


_SUMMARY_METRICS = ("roc_auc", "log_loss", "ece")


def summary(result: TrainResult) -> dict[str, Any]:
    """The machine-readable summary of a retrain (``leadscore train --summary FILE``).

    Test-month figures of the backtest — the procedure that produced the registered model — for the
    shipped kind, LightGBM alone, the logistic baseline and the rule score (and the ground truth on a
    generated CRM); the drift report; the verdict per target. Those figures are over the *sampled* test
    moments; ``population`` has the same models' AUC, log loss and ECE over every eligible test moment
    (rows weighted by ``moment_weight``), the figures that describe what production scores (the sampler
    keeps more moments of leads that convert: the sample's rate runs above the population's).
    """
    def pick(metrics: dict[str, Any]) -> dict[str, Any]:
        return {m: float(metrics[m].value) for m in _SUMMARY_METRICS}

    targets: dict[str, Any] = {}
    for target, tr in result.targets.items():
        entry: dict[str, Any] = {
            "shipped": {"model": tr.shipped_choice.kind, **pick(tr.metrics["shipped"])},
            **{m: pick(tr.metrics[m]) for m in ("lightgbm", "logistic", "rule", "ground_truth") if m in tr.metrics},
            "share_of_ceiling_lift": tr.share_of_ceiling_lift,
            "test_months": tr.split.months("test"),
            "metrics_describe": "backtest of the procedure on the test months",
            "rows_describe": "the sampled test moments, unweighted",
            "registered": "refit on all matured months" if tr.refit is not None else "the backtest model",
            "recency": tr.recency.chosen.to_dict(),
        }
        population = {m: tr.population[m] for m in ("shipped", "lightgbm", "logistic", "rule", "ground_truth")
                      if m in tr.population}
        if population:
            entry["population"] = {**population, "rows_describe": "every eligible test moment: rows weighted by "
                                                                  "moment_weight"}
        if target in result.verdicts:
            entry["beats_rule"], entry["verdict"] = result.verdicts[target]
        targets[target] = entry
    return json.loads(json.dumps({"targets": targets, "drift": result.drift}, default=float))


def log_run(result: TrainResult, work: Path, settings: Settings, started: float) -> None:
    """Metrics, parameters and artifacts of the active run; the bundle logged and registered as challenger.

    Metric names say what they describe: ``backtest.<target>.<model>.<metric>`` are the procedure's
    test-month figures on the sampled moments, ``backtest.<target>.<model>.population.<metric>`` the same
    over every eligible moment (weighted by ``moment_weight``), ``refit.<target>.*`` describe the registered refit (its rows and its calibration
    slice), ``drift.*`` the drift of the test months against the backtest's training rows.
    """
    import mlflow

    from leadscore.training.pyfunc import log_bundle_model

    metrics: dict[str, float] = {}
    for target, tr in result.targets.items():
        for name, ms in tr.metrics.items():
            model = name.replace(" ", "_")
            for metric, ci in ms.items():
                if np.isfinite(ci.value):
                    metrics[f"backtest.{target}.{model}.{metric}"] = ci.value
                    metrics[f"backtest.{target}.{model}.{metric}.ci_lo"] = ci.lo
                    metrics[f"backtest.{target}.{model}.{metric}.ci_hi"] = ci.hi
        for name, figures in tr.population.items():  # over every eligible moment (artifacts.summary)
            for metric in _SUMMARY_METRICS:
                metrics[f"backtest.{target}.{name.replace(' ', '_')}.population.{metric}"] = figures[metric]
        if tr.share_of_ceiling_lift is not None:
            metrics[f"backtest.{target}.share_of_ceiling_lift"] = tr.share_of_ceiling_lift
        if tr.refit is not None:
            metrics[f"refit.{target}.rows.fit"] = len(tr.refit.rows.fit)
            metrics[f"refit.{target}.rows.calibration"] = len(tr.refit.rows.calibration)
            metrics[f"refit.{target}.calibration_slice_log_loss"] = tr.refit.calibration_log_loss
        for name, loss in tr.choice.log_loss.items():
            metrics[f"backtest.{target}.choice.{name.replace(' ', '_')}.calibrated_log_loss"] = loss
        mlflow.log_params({f"{target}.model_kind": tr.shipped_choice.kind,
                           f"{target}.blend_weight": tr.shipped_choice.blend_weight,
                           f"{target}.recency.window_months": tr.recency.chosen.window_months,
                           f"{target}.recency.half_life_months": tr.recency.chosen.half_life_months,
                           f"{target}.registered": "refit" if tr.refit is not None else "backtest"})
        if target in result.verdicts:
            mlflow.set_tag(f"verdict.{target}", result.verdicts[target][1][:5000])
        metrics[f"{target}.tune.best_validation_log_loss"] = tr.tune.best_value
        metrics[f"{target}.tune.pruned_trials"] = tr.tune.n_pruned
        for p, n in tr.rows.items():
            metrics[f"{target}.rows.{p}"] = n
            metrics[f"{target}.positives.{p}"] = tr.positives[p]
        mlflow.log_params({f"{target}.{k}": v for k, v in tr.model.params.items()
                           if k not in ("objective", "metric", "verbosity")})
        mlflow.log_params({f"{target}.calibration": tr.model.calibrator.method,
                           f"{target}.window.train": f"{tr.split.months('train')[0]}..{tr.split.months('train')[-1]}",
                           f"{target}.window.test": ",".join(tr.split.months("test"))})
    for f in result.drift.get("features", []):
        name = re.sub(r"[^\w./ -]", "_", f["feature"])  # MLflow's metric-name alphabet
        metrics[f"drift.psi.{name}"] = f["psi"]
        metrics[f"drift.outside_range.{name}"] = f["outside_range"]
    metrics["train_seconds"] = time.time() - started
    mlflow.log_metrics(metrics)
    for name in result.artifacts:
        if not name.startswith("bundle/"):
            sub = str(Path(name).parent) if Path(name).parent != Path(".") else None
            mlflow.log_artifact(str(work / name), artifact_path=sub)
    result.run_id, result.model_version = log_bundle_model(result.bundle, work / "bundle", result.example, settings)
