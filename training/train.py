"""The monthly retrain: time splits, the shared fitting procedure, backtest against baselines, MLflow.

:func:`train` is what ``leadscore train`` runs: CRM directory in, registered challenger out.
:func:`train_from_dataset` does the work on an already built moments dataset so other entry points
(flat tables, benchmarks, tests that perturb labels) reuse the exact same procedure.

Per target (``sql``, ``opportunity``; a flat table's one label trains ``sql`` only):

1. matured moments only, split by month: train / validation / calibration / test (never random);
2. data minimums on the training window (else the rule-based score stays in force);
3. :func:`training.fit.fit_target` with the months in its roles: Optuna search on a time-stratified
   sample of the training months, pruned and early-stopped on the validation months; final model on
   all training months; calibration fitted (and its method chosen) on the calibration months only;
4. backtest on the test months against the rule score and a logistic regression (and, on a generated
   CRM, the ground-truth ceiling), every metric with a bootstrap 95% CI.

Artifacts and the MLflow record are written by :mod:`training.artifacts`.
"""

from __future__ import annotations

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
from leadscore.errors import DataError
from leadscore.training.artifacts import log_run, trial_logger, write_artifacts
from leadscore.training.baselines import baseline_scores
from leadscore.training.bundle import (
    OUTPUT_COLUMNS,
    BoundBundle,
    FeatureColumn,
    ScoringBundle,
    TargetModel,
    TrainingWindow,
    schema_dicts,
)
from leadscore.training.fit import FitResult, RowSets, fit_target
from leadscore.training.metrics import METRICS, MetricCI, evaluate_metrics
from leadscore.training.split import (
    PERIODS,
    TARGETS,
    InsufficientDataError,
    TimeSplit,
    check_minimums,
    stratified_time_sample,
    time_split,
)
from leadscore.training.tune import TuneResult

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
    fit: FitResult
    model: TargetModel
    metrics: dict[str, dict[str, MetricCI]]
    rows: dict[str, int]
    positives: dict[str, int]
    capacity_share: float
    share_of_ceiling_lift: float | None = None

    @property
    def tune(self) -> TuneResult:
        return self.fit.tune

    @property
    def importance(self) -> pd.Series:
        return self.fit.importance


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
) -> tuple[TimeSplit, dict[str, np.ndarray]]:
    """The target's time split and the positions of its matured, labelled moments per period.

    Raises :class:`~training.split.InsufficientDataError` naming what is missing.
    """
    label = TARGETS[target]
    horizon = settings.horizons.sql_days if target == "sql" else settings.horizons.opp_days
    # masks and positions, not per-period frames: at a million moments every copy of the frame is ~1 GB
    labelled = dataset[label].notna().to_numpy()
    as_of = dataset["as_of"]
    split = time_split(as_of[labelled], cutoff, horizon, settings.training.split, target)
    rows = {p: np.flatnonzero(labelled & split.mask(as_of, p)) for p in PERIODS}
    y = dataset[label].to_numpy(dtype=np.float64)
    check_minimums(y[rows["train"]], split, settings.training.minimums)
    for p in ("validation", "calibration", "test"):
        yp = y[rows[p]]
        if len(np.unique(yp)) < 2:
            raise InsufficientDataError(
                f"the {p} months {', '.join(split.months(p))} of the {target} model contain "
                f"{len(yp)} matured moments and {int(yp.sum())} positives; both outcomes are needed. "
                "The rule-based score stays in force."
            )
    return split, rows


def check_data(dataset: pd.DataFrame, settings: Settings, cutoff: pd.Timestamp,
               targets: Sequence[str] = tuple(TARGETS)) -> dict[str, TimeSplit]:
    """Check every target's minimums before any work, so a shortfall is reported at once, in full."""
    problems, splits = [], {}
    for target in targets:
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
    """Split by month, run :func:`~training.fit.fit_target` and backtest one target (module docstring).

    The months play the procedure's roles: train = fit (its time-stratified sample = tune),
    validation = early stopping, calibration = calibration, test = test.
    """
    cfg = settings.training
    label = TARGETS[target]
    split, rows = split_target(dataset, settings, cutoff, target)
    y = dataset[label].to_numpy(dtype=np.float64)
    sample = stratified_time_sample(dataset["as_of"].iloc[rows["train"]], cfg.tune_sample_rows, cfg.seed)
    roles = RowSets(fit=rows["train"], early_stop=rows["validation"], calibration=rows["calibration"],
                    test=rows["test"], tune=rows["train"][sample])
    fit = fit_target(dataset, y, roles, schema, cfg, trials=trials, timeout=timeout, on_trial=on_trial,
                     progress=lambda text: _emit(progress, "phase", f"{target}: {text}"))

    _emit(progress, "phase", f"{target}: backtest")
    rule = dataset["rule_score"].to_numpy(dtype=np.float64)
    lr_rows = rows["train"][stratified_time_sample(dataset["as_of"].iloc[rows["train"]], cfg.logreg_max_rows,
                                                   cfg.seed)]
    baselines = baseline_scores(dataset, y, rule, schema, logistic_rows=lr_rows, rule_rows=rows["calibration"],
                                test_rows=rows["test"], seed=cfg.seed)
    cap = _capacity_share(settings, rule[rows["test"]])
    scores = {"lightgbm": fit.scores("test"), "lightgbm_uncalibrated": fit.raw["test"], **baselines}
    yt = y[rows["test"]]
    ceiling = False
    if truth is not None:
        t = truth[TRUTH_COLUMNS[target]].to_numpy(dtype=np.float64)[rows["test"]]
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
    model = TargetModel(model_str=fit.model_string(), encodings=fit.encodings, calibrator=fit.calibrator,
                        params={**fit.params, "num_iterations": fit.rounds[0]})
    _emit(progress, "target_done", target)
    return TargetResult(
        target=target, split=split, fit=fit, model=model, metrics=metrics,
        rows={p: len(r) for p, r in rows.items()}, positives={p: int(y[r].sum()) for p, r in rows.items()},
        capacity_share=cap, share_of_ceiling_lift=share,
    )


def _scored_frame(dataset: pd.DataFrame, bundle: BoundBundle, mask: np.ndarray) -> pd.DataFrame:
    """The rows' ids, scores, labels and segments (what the stage policy and the SLA report replay).

    A one-target bundle (a one-label flat table) scores one probability; it is written under both
    output names, so the policy sets the MQL and the SQL threshold on the one label it has.
    """
    rows = dataset[mask]
    preds = bundle.predict(rows)
    only = preds.columns[0] if len(preds.columns) == 1 else None
    out = rows[[c for c in SCORED_COLUMNS if c in rows.columns and c not in OUTPUT_COLUMNS.values()]].copy()
    for c in OUTPUT_COLUMNS.values():
        out[c] = preds[c if only is None else only].to_numpy()
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
    targets: Sequence[str] = tuple(TARGETS),
) -> TrainResult:
    """Train ``targets`` (default both) on a moments dataset (columns ``lead_id, as_of, <schema>,
    rule_score, y_sql, y_opp``; the stage policy's replay reads both labels).

    A one-label table (the flat path) trains one target: its bundle holds that one model, and the
    scored frames report its probability under both output names (see :func:`_scored_frame`). With ``log_to_mlflow`` (the default) everything is logged to a parent run with nested trial runs and
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
        raise DataError(f"the moments dataset lacks column(s): {', '.join(missing)}")
    dataset = dataset.reset_index(drop=True)
    cutoff = pd.Timestamp(cutoff)
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets:
        raise ValueError(f"targets must be a non-empty subset of {list(TARGETS)}; got {list(targets)}")
    check_data(dataset, settings, cutoff, targets)
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
        for target in targets:
            on_trial = trial_logger(target, progress, log_to_mlflow, run)
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
                         "calibration_log_loss": r.fit.calibration_log_loss,
                         "capacity_share": r.capacity_share,
                         "share_of_ceiling_lift": r.share_of_ceiling_lift} for t, r in results.items()},
            info={"seed": cfg.seed, "trials": trials, "trained_at": pd.Timestamp.now(tz="UTC").isoformat(),
                  "best_params": {t: r.model.params for t, r in results.items()}},
        ).bind(schema_hash=schema_hash)  # the producer: its features were computed under this hash
        first = results[targets[0]].split
        as_of, known = dataset["as_of"], dataset[TARGETS[targets[0]]].notna()
        cal_mask = np.asarray((as_of >= first.validation_start) & (as_of < first.test_start) & known)
        test_mask = np.asarray((as_of >= first.test_start) & (as_of < first.test_end) & known)
        scored_cal = _scored_frame(dataset, bundle, cal_mask)
        scored_test = _scored_frame(dataset, bundle, test_mask)
        policy = _fit_policy(scored_cal, settings)
        bundle.stage_policy = policy
        example = dataset.loc[test_mask, bundle.feature_names].head(5).reset_index(drop=True)
        result = TrainResult(bundle=bundle, targets=results, scored_calibration=scored_cal, scored_test=scored_test,
                             example=example)
        work = Path(tempfile.mkdtemp(prefix="leadscore-train-")) if out_dir is None else Path(out_dir)
        try:
            write_artifacts(result, dataset, spec, settings, work)
            if log_to_mlflow:
                log_run(result, work, settings, started)
        finally:
            if out_dir is None:
                shutil.rmtree(work, ignore_errors=True)
        return result
    finally:
        blas.restore_original_limits()
        if run is not None:
            import mlflow

            mlflow.end_run()


def _fit_policy(scored_cal: pd.DataFrame, settings: Settings) -> Any:
    """The SLA engineer's stage policy, fitted on the validation+calibration months (None if absent)."""
    try:
        from leadscore.training.sla import fit_stage_policy
    except ImportError:
        return None
    return fit_stage_policy(scored_cal, settings)


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
        raise DataError(f"CRM history in {crm_dir} is not usable: {bad}")
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
