"""The monthly retrain: time splits, tuning, calibration, backtest against baselines, MLflow logging.

:func:`train` is what ``leadscore train`` runs: CRM directory in, registered challenger out.
:func:`train_from_dataset` does the work on an already built moments dataset so other entry points
(flat tables, benchmarks, tests that perturb labels) reuse the exact same procedure.

Per target (``sql``, ``opportunity``):

1. matured moments only, split by month: train / validation / calibration / test (never random);
2. data minimums on the training window (else the rule-based score stays in force);
3. Optuna search on a time-stratified sample of the training months, early stopping and pruning on
   the validation months; final model on all training months;
4. calibration fitted on the calibration months, method chosen by validation log loss;
5. backtest on the test months against the rule score and a logistic regression (and, on a generated
   CRM, the ground-truth ceiling), every metric with a bootstrap 95% CI.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from leadscore.config import Settings
from leadscore.training.bundle import (
    OUTPUT_COLUMNS,
    BoundBundle,
    FeatureColumn,
    ScoringBundle,
    TargetModel,
    TrainingWindow,
    schema_dicts,
)
from leadscore.training.calibration import fit_calibrator
from leadscore.training.encoding import categorical_indices, encode_frame, fit_encodings
from leadscore.training.metrics import METRICS, MetricCI, evaluate_metrics
from leadscore.training.split import (
    TARGETS,
    InsufficientDataError,
    TimeSplit,
    check_minimums,
    stratified_time_sample,
    time_split,
)
from leadscore.training.tune import TuneResult, fit_lightgbm, make_dataset, threads_for, tune_lightgbm

SCORED_COLUMNS = ["lead_id", "as_of", "p_sql", "p_opportunity", "rule_score", "y_sql", "y_opp",
                  "source", "industry", "employee_band", "days_since_created"]
GROUND_TRUTH_FILE = "ground_truth.parquet"
TRUTH_COLUMNS = {"sql": "p_sql_30d", "opportunity": "p_opp_90d"}

#: called with (event, payload): "phase" (str), "trial" (target, trial record), "target_done" (target)
ProgressFn = Callable[[str, Any], None]


@dataclass
class TargetResult:
    """Everything learned and measured for one target."""

    target: str
    split: TimeSplit
    tune: TuneResult
    model: TargetModel
    calibration_scores: dict[str, float]
    metrics: dict[str, dict[str, MetricCI]]
    rows: dict[str, int]
    positives: dict[str, int]
    capacity_share: float
    importance: pd.Series
    share_of_ceiling_lift: float | None = None


@dataclass
class TrainResult:
    bundle: BoundBundle
    targets: dict[str, TargetResult]
    scored_calibration: pd.DataFrame
    scored_test: pd.DataFrame
    run_id: str | None = None
    model_version: str | None = None
    sla_report: dict[str, Any] | None = None
    #: a few real feature rows from the test months (the MLflow input example)
    example: pd.DataFrame = field(default_factory=pd.DataFrame)
    artifacts: list[str] = field(default_factory=list)

    def metrics_table(self) -> pd.DataFrame:
        """Long table: target, model, metric, value, lo, hi (what the results table shows)."""
        rows = []
        for target, tr in self.targets.items():
            for model, ms in tr.metrics.items():
                for metric, ci in ms.items():
                    rows.append({"target": target, "model": model, "metric": metric,
                                 "value": ci.value, "lo": ci.lo, "hi": ci.hi})
        return pd.DataFrame(rows)


def _emit(progress: ProgressFn | None, event: str, payload: Any) -> None:
    if progress is not None:
        progress(event, payload)


def _metrics_dict(ms: dict[str, MetricCI]) -> dict[str, dict[str, float]]:
    return {k: v.to_dict() for k, v in ms.items()}


def attach_truth(dataset: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Join each moment to its lead's true probabilities on ``as_of.floor("D")`` (generated CRMs only)."""
    keys = pd.DataFrame({"lead_id": dataset["lead_id"].astype(str).to_numpy(),
                         "day": dataset["as_of"].dt.floor("D").to_numpy()})
    # only the days that moments fall on: the truth table has a row per lead and open day (tens of millions)
    t = truth.loc[truth["day"].isin(keys["day"].unique()), ["lead_id", "day", *TRUTH_COLUMNS.values()]]
    t = t.assign(lead_id=t["lead_id"].astype(str),
                 day=pd.to_datetime(t["day"], utc=True).dt.as_unit(keys["day"].dt.unit))
    merged = keys.merge(t, on=["lead_id", "day"], how="left", validate="many_to_one")
    return merged[list(TRUTH_COLUMNS.values())].set_axis(dataset.index)


def _capacity_share(settings: Settings, rule: np.ndarray) -> float:
    if settings.training.capacity_share is not None:
        return settings.training.capacity_share
    share = float(np.mean(np.nan_to_num(rule) >= settings.rules.mql_threshold))
    return share if 0.0 < share < 1.0 else 0.1


def split_target(
    dataset: pd.DataFrame, settings: Settings, cutoff: pd.Timestamp, target: str
) -> tuple[TimeSplit, dict[str, pd.DataFrame]]:
    """The target's time split and its matured, labelled moments per period, minimums checked.

    Raises :class:`~training.split.InsufficientDataError` naming what is missing.
    """
    label = TARGETS[target]
    horizon = settings.horizons.sql_days if target == "sql" else settings.horizons.opp_days
    # masks, not an intermediate "labelled" frame: at a million moments every copy of the frame is ~1 GB
    labelled = dataset[label].notna().to_numpy()
    as_of = dataset["as_of"]
    split = time_split(as_of[labelled], cutoff, horizon, settings.training.split, target)
    parts = {p: dataset[labelled & split.mask(as_of, p)] for p in ("train", "validation", "calibration", "test")}
    check_minimums(parts["train"][label].to_numpy(dtype=np.float64), split, settings.training.minimums)
    for p in ("validation", "calibration", "test"):
        yp = parts[p][label].to_numpy(dtype=np.float64)
        if len(np.unique(yp)) < 2:
            raise InsufficientDataError(
                f"the {p} months {', '.join(split.months(p))} of the {target} model contain "
                f"{len(yp)} matured moments and {int(yp.sum())} positives; both outcomes are needed. "
                "The rule-based score stays in force."
            )
    return split, parts


def check_data(dataset: pd.DataFrame, settings: Settings, cutoff: pd.Timestamp) -> dict[str, TimeSplit]:
    """Check every target's minimums before any work, so a shortfall is reported at once, in full."""
    problems, splits = [], {}
    for target in TARGETS:
        try:
            splits[target] = split_target(dataset, settings, cutoff, target)[0]
        except InsufficientDataError as exc:
            problems.append(str(exc))
    if problems:
        raise InsufficientDataError("\n".join(problems))
    return splits


def train_target(
    dataset: pd.DataFrame,
    schema: list[FeatureColumn],
    settings: Settings,
    cutoff: pd.Timestamp,
    target: str,
    *,
    trials: int,
    timeout: float | None,
    truth: pd.DataFrame | None = None,
    progress: ProgressFn | None = None,
    on_trial: Callable[[dict[str, Any]], None] | None = None,
) -> TargetResult:
    """Split, tune, fit, calibrate and backtest one target (see the module docstring)."""
    from leadscore.training.baselines import (
        fit_logistic,
        fit_rule_probability,
        predict_logistic,
        rule_probability,
    )

    cfg = settings.training
    label = TARGETS[target]
    split, parts = split_target(dataset, settings, cutoff, target)
    y = {p: parts[p][label].to_numpy(dtype=np.float64) for p in parts}
    encodings = fit_encodings(parts["train"], schema)
    X = {p: encode_frame(parts[p], schema, encodings) for p in parts}
    cat = categorical_indices(schema)

    _emit(progress, "phase", f"{target}: tuning ({trials} trials)")
    sample = stratified_time_sample(parts["train"]["as_of"], cfg.tune_sample_rows, cfg.seed)
    tune = tune_lightgbm(X["train"][sample], y["train"][sample], X["validation"], y["validation"], cat, cfg,
                         trials=trials, timeout=timeout, seed=cfg.seed, on_trial=on_trial)

    _emit(progress, "phase", f"{target}: final fit on {len(y['train']):,} moments")
    train_set = make_dataset(X["train"], y["train"], cat, params={"max_bin": cfg.lightgbm.max_bin})
    final_params = {**tune.params, "num_threads": threads_for(cfg, len(y["train"])),
                    "learning_rate": tune.params["learning_rate"] * cfg.lightgbm.final_learning_rate_factor}
    booster = fit_lightgbm(train_set, make_dataset(X["validation"], y["validation"], cat, reference=train_set),
                           final_params, cfg)
    model_str = booster.model_to_string(num_iteration=booster.best_iteration)
    importance = pd.Series(booster.feature_importance("gain", iteration=booster.best_iteration),
                           index=[s["name"] for s in schema], dtype=np.float64)
    raw = {p: np.asarray(booster.predict(X[p], num_iteration=booster.best_iteration)) for p in parts}

    _emit(progress, "phase", f"{target}: calibration and backtest")
    calibrator, cal_scores = fit_calibrator(raw["calibration"], y["calibration"], raw["validation"],
                                            y["validation"], cfg.min_isotonic_rows)
    rule = {p: parts[p]["rule_score"].to_numpy(dtype=np.float64) for p in ("calibration", "test")}
    rule_model = fit_rule_probability(rule["calibration"], y["calibration"])
    lr_rows = stratified_time_sample(parts["train"]["as_of"], cfg.logreg_max_rows, cfg.seed)
    logistic = fit_logistic(parts["train"].iloc[lr_rows], y["train"][lr_rows], schema, seed=cfg.seed)
    cap = _capacity_share(settings, rule["test"])
    scores = {
        "lightgbm": calibrator(raw["test"]),
        "lightgbm_uncalibrated": raw["test"],
        "logistic": predict_logistic(logistic, parts["test"], schema),
        "rule": rule_probability(rule_model, rule["test"]),
    }
    yt = y["test"]
    ceiling = None
    if truth is not None:
        t = truth.loc[parts["test"].index, TRUTH_COLUMNS[target]].to_numpy(dtype=np.float64)
        if np.isfinite(t).mean() > 0.95:
            # A few moments may miss a truth row (e.g. a lead created the same day); evaluate all
            # models on the same rows so the ceiling is comparable.
            ok = np.isfinite(t)
            scores = {k: v[ok] for k, v in scores.items()}
            scores["ground_truth"] = t[ok]
            yt = yt[ok]
            ceiling = True
    metrics = {
        name: evaluate_metrics(yt, p, capacity_share=cap, n_boot=cfg.bootstrap_samples, n_bins=cfg.ece_bins,
                               seed=cfg.seed)
        for name, p in scores.items()
    }
    share = None
    if ceiling:
        auc_truth = metrics["ground_truth"]["roc_auc"].value
        share = (metrics["lightgbm"]["roc_auc"].value - 0.5) / (auc_truth - 0.5) if auc_truth > 0.5 else None
    model = TargetModel(model_str=model_str, encodings=encodings, calibrator=calibrator,
                        params={**tune.params, "num_iterations": int(booster.best_iteration)})
    _emit(progress, "target_done", target)
    return TargetResult(
        target=target, split=split, tune=tune, model=model, calibration_scores=cal_scores, metrics=metrics,
        rows={p: len(y[p]) for p in y}, positives={p: int(y[p].sum()) for p in y}, capacity_share=cap,
        importance=importance, share_of_ceiling_lift=share,
    )


def _scored_frame(dataset: pd.DataFrame, bundle: BoundBundle, mask: np.ndarray) -> pd.DataFrame:
    rows = dataset[mask]
    preds = bundle.predict(rows)
    out = rows[[c for c in SCORED_COLUMNS if c in rows.columns and c not in OUTPUT_COLUMNS.values()]].copy()
    for c in OUTPUT_COLUMNS.values():
        out[c] = preds[c].to_numpy()
    return out[[c for c in SCORED_COLUMNS if c in out.columns]].reset_index(drop=True)


def _window(results: dict[str, TargetResult], cutoff: pd.Timestamp, n: int) -> TrainingWindow:
    return {  # one TargetWindow per target key
        "cutoff": cutoff.isoformat(),
        "moments": n,
        **{t: {**r.split.to_dict(), "months": {p: r.split.months(p) for p in ("train", "validation", "calibration", "test")},  # type: ignore[typeddict-item]
               "rows": r.rows, "positives": r.positives} for t, r in results.items()},
    }


def train_from_dataset(
    dataset: pd.DataFrame,
    schema: Sequence[Any],
    settings: Settings,
    cutoff: pd.Timestamp,
    *,
    schema_hash: str,
    truth: pd.DataFrame | None = None,
    trials: int | None = None,
    timeout: float | None = None,
    progress: ProgressFn | None = None,
    log_to_mlflow: bool = True,
    out_dir: Path | None = None,
    data_info: dict[str, Any] | None = None,
) -> TrainResult:
    """Train both targets on a moments dataset (columns ``lead_id, as_of, <schema>, rule_score, y_sql, y_opp``).

    With ``log_to_mlflow`` (the default) everything is logged to a parent run with nested trial runs and
    the bundle is registered as the ``challenger``; ``out_dir`` keeps a copy of the bundle and artifacts.
    Raises :class:`~training.split.InsufficientDataError` when a minimum is not met.
    """
    cfg = settings.training
    trials = trials if trials is not None else cfg.trials
    timeout = timeout if timeout is not None else cfg.timeout_seconds
    spec = schema_dicts(schema)
    missing = [c for c in ["lead_id", "as_of", "rule_score", "y_sql", "y_opp", *(s["name"] for s in spec)]
               if c not in dataset.columns]
    if missing:
        raise ValueError(f"the moments dataset lacks column(s): {', '.join(missing)}")
    dataset = dataset.reset_index(drop=True)
    cutoff = pd.Timestamp(cutoff)
    check_data(dataset, settings, cutoff)
    truth_cols = attach_truth(dataset, truth) if truth is not None else None

    run = None
    started = time.time()
    if log_to_mlflow:
        import mlflow

        from leadscore.training.tracking import ensure_experiment, git_commit

        exp_id = ensure_experiment(cfg.experiment_name, settings)
        run = mlflow.start_run(experiment_id=exp_id, run_name=f"retrain {cutoff:%Y-%m-%d}")
        mlflow.set_tags({"leadscore.kind": "retrain", "config_hash": settings.config_hash(),
                         "schema_hash": schema_hash, "git_commit": git_commit(),
                         "data.cutoff": cutoff.isoformat(), **{f"data.{k}": str(v) for k, v in (data_info or {}).items()}})
        mlflow.log_params({"seed": cfg.seed, "trials": trials, "timeout": timeout, "tune_sample_rows": cfg.tune_sample_rows,
                           "moments": len(dataset), "cutoff": cutoff.isoformat(), "config_hash": settings.config_hash(),
                           "schema_hash": schema_hash, **{f"split.{k}": v for k, v in cfg.split.model_dump().items()}})
    # BLAS worker threads spin-wait; on two shared cores they slow the logistic baseline and the
    # calibrators down ~15x while adding nothing at these matrix sizes. LightGBM keeps its own threads.
    from threadpoolctl import threadpool_limits

    blas = threadpool_limits(limits=1, user_api="blas")
    try:
        results: dict[str, TargetResult] = {}
        for target in TARGETS:
            on_trial = _trial_logger(target, progress, log_to_mlflow, run)
            results[target] = train_target(dataset, spec, settings, cutoff, target, trials=trials, timeout=timeout,
                                           truth=truth_cols, progress=progress, on_trial=on_trial)
        _emit(progress, "phase", "bundle, stage policy and artifacts")
        bundle = ScoringBundle(
            schema=spec, schema_hash=schema_hash, config_hash=settings.config_hash(),
            models={t: r.model for t, r in results.items()},
            rules=settings.rules,
            window=_window(results, cutoff, len(dataset)),
            metrics={t: {"test": {m: _metrics_dict(v) for m, v in r.metrics.items()},
                         "calibration_method": r.model.calibrator.method,
                         "calibration_val_log_loss": r.calibration_scores,
                         "capacity_share": r.capacity_share,
                         "share_of_ceiling_lift": r.share_of_ceiling_lift} for t, r in results.items()},
            info={"seed": cfg.seed, "trials": trials, "trained_at": pd.Timestamp.now(tz="UTC").isoformat(),
                  "best_params": {t: r.model.params for t, r in results.items()}},
        ).bind(schema_hash=schema_hash)  # the producer: its features were computed under this hash
        sql = results["sql"].split
        as_of = dataset["as_of"]
        cal_mask = np.asarray((as_of >= sql.validation_start) & (as_of < sql.test_start) & dataset["y_sql"].notna())
        test_mask = np.asarray((as_of >= sql.test_start) & (as_of < sql.test_end) & dataset["y_sql"].notna())
        scored_cal = _scored_frame(dataset, bundle, cal_mask)
        scored_test = _scored_frame(dataset, bundle, test_mask)
        policy = _fit_policy(scored_cal, settings)
        bundle.stage_policy = policy
        example = dataset.loc[test_mask, bundle.feature_names].head(5).reset_index(drop=True)
        result = TrainResult(bundle=bundle, targets=results, scored_calibration=scored_cal, scored_test=scored_test,
                             example=example)
        work = Path(tempfile.mkdtemp(prefix="leadscore-train-")) if out_dir is None else Path(out_dir)
        try:
            _write_artifacts(result, dataset, spec, settings, work)
            if log_to_mlflow:
                _log_run(result, work, settings, started)
        finally:
            if out_dir is None:
                shutil.rmtree(work, ignore_errors=True)
        return result
    finally:
        blas.restore_original_limits()
        if run is not None:
            import mlflow

            mlflow.end_run()


def _trial_logger(target: str, progress: ProgressFn | None, log: bool, run: Any) -> Callable[[dict[str, Any]], None]:
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
        _emit(progress, "trial", (target, rec))

    return on_trial


def _fit_policy(scored_cal: pd.DataFrame, settings: Settings) -> Any:
    """The SLA engineer's stage policy, fitted on the validation+calibration months (None if absent)."""
    try:
        from leadscore.training.sla import fit_stage_policy
    except ImportError:
        return None
    return fit_stage_policy(scored_cal, settings)


def _write_artifacts(result: TrainResult, dataset: pd.DataFrame, spec: list[FeatureColumn], settings: Settings,
                     work: Path) -> None:
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
        raw = result.bundle.predict_raw(rows, target)
        curves[target] = {"uncalibrated": (y, raw), "calibrated": (y, tr.model.calibrator(raw))}
        sample = rows.sample(n=min(2000, len(rows)), random_state=settings.training.seed)
        X = pd.DataFrame(result.bundle.encode(sample, target), columns=[s["name"] for s in spec], index=sample.index)
        contribs[target] = (result.bundle.contributions(sample, target), X)
    calibration_plot(curves, work / "calibration.png")
    importance_plot({t: r.importance for t, r in result.targets.items()}, work / "feature_importance.png")
    shap_summary_plot(contribs, work / "shap_summary.png")
    report = _build_report(result, settings, work)
    result.sla_report = report
    result.artifacts = sorted(str(p.relative_to(work)) for p in work.rglob("*") if p.is_file())


def _build_report(result: TrainResult, settings: Settings, work: Path) -> dict[str, Any] | None:
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
                                              warmup=result.scored_calibration)
    return report


def _log_run(result: TrainResult, work: Path, settings: Settings, started: float) -> None:
    import mlflow

    from leadscore.training.pyfunc import log_bundle_model

    metrics: dict[str, float] = {}
    for target, tr in result.targets.items():
        for model, ms in tr.metrics.items():
            for metric, ci in ms.items():
                if np.isfinite(ci.value):
                    metrics[f"{target}.{model}.{metric}"] = ci.value
                    metrics[f"{target}.{model}.{metric}.ci_lo"] = ci.lo
                    metrics[f"{target}.{model}.{metric}.ci_hi"] = ci.hi
        if tr.share_of_ceiling_lift is not None:
            metrics[f"{target}.share_of_ceiling_lift"] = tr.share_of_ceiling_lift
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
    metrics["train_seconds"] = time.time() - started
    mlflow.log_metrics(metrics)
    for name in result.artifacts:
        if not name.startswith("bundle/"):
            sub = str(Path(name).parent) if Path(name).parent != Path(".") else None
            mlflow.log_artifact(str(work / name), artifact_path=sub)
    result.run_id, result.model_version = log_bundle_model(result.bundle, work / "bundle", result.example, settings)


def _source_name(source: Path | str) -> str:
    """What the run records as its data source: a resolved directory, or the URL without its password."""
    from leadscore.history import is_database_url

    if is_database_url(source):
        from sqlalchemy.engine import make_url

        return make_url(str(source)).render_as_string(hide_password=True)
    return str(Path(source).resolve())


def train(
    crm_dir: Path | str,
    settings: Settings,
    cutoff: str | pd.Timestamp | None = None,
    *,
    trials: int | None = None,
    timeout: float | None = None,
    progress: ProgressFn | None = None,
    out_dir: Path | None = None,
) -> TrainResult:
    """``leadscore train``: load and validate the CRM, build matured moments, train, log and register."""
    from leadscore.features.build import build_dataset
    from leadscore.features.schema import feature_schema, schema_hash
    from leadscore.history import is_database_url, load_history

    _emit(progress, "phase", "loading CRM history")
    history, report = load_history(crm_dir, settings, cutoff=cutoff)
    if not report.usable:
        bad = {n: t.unusable for n, t in report.tables.items() if t.unusable}
        raise ValueError(f"CRM history in {crm_dir} is not usable: {bad}")
    _emit(progress, "phase", "building point-in-time features and labels")
    dataset, _summary = build_dataset(history, settings)
    cutoff_ts = history.cutoff
    del history  # from here on only the moments are needed; free the tables before boosting
    truth = None
    truth_path = None if is_database_url(crm_dir) else Path(crm_dir) / GROUND_TRUTH_FILE
    if truth_path is not None and truth_path.exists():
        truth = pd.read_parquet(truth_path)
    return train_from_dataset(
        dataset, feature_schema(settings), settings, cutoff_ts, schema_hash=schema_hash(settings),
        truth=truth, trials=trials, timeout=timeout, progress=progress, out_dir=out_dir,
        data_info={"crm_dir": _source_name(crm_dir), "moments": len(dataset)},
    )


__all__ = ["METRICS", "TargetResult", "TrainResult", "attach_truth", "train", "train_from_dataset", "train_target"]
