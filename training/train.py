"""The monthly retrain: backtest the procedure, refit the registered model, drift report, MLflow.

:func:`train` is what ``leadscore train`` runs: CRM directory in, registered challenger out.
:func:`train_from_dataset` does the work on an already built moments dataset so other entry points
(flat tables, benchmarks, tests that perturb labels) reuse the exact same procedure.

Per target (``sql``, ``opportunity``; a flat table's one label trains ``sql`` only):

1. the backtest (:mod:`training.backtest`): matured moments split by month into train / validation /
   calibration / test; recency, hyper-parameters, rounds, model kind and calibration method chosen on
   the held-out months; the procedure measured on the test months against the rule score, the logistic
   baseline and, on a generated CRM, the ground-truth ceiling;
2. the production refit (:mod:`training.refit`): the chosen model refit on all matured months, the
   newest calibrating it. That is the model registered; the test metrics describe the procedure.

The drift between the backtest's training rows and its test months (:mod:`training.drift`) comes with
the run, and so does the verdict whether the shipped model beats the rule score. The scored frames,
the stage policy's fit and the SLA report use the backtest's model on months it was not fitted on.
Artifacts and the MLflow record are written by :mod:`training.artifacts`.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from leadscore.config import Settings
from leadscore.errors import DataError
from leadscore.training.account_calibration import AccountMoments
from leadscore.training.artifacts import log_run, trial_logger, write_artifacts
from leadscore.training.backtest import (
    SHIPPED,
    TRUTH_COLUMNS,
    ProgressFn,
    TargetResult,
    attach_truth,
    train_target,
)
from leadscore.training.bundle import (
    OUTPUT_COLUMNS,
    BoundBundle,
    ScoringBundle,
    TargetModel,
    TrainingWindow,
    schema_dicts,
)
from leadscore.training.drift import drift_report, label_rate_by_month, verdict
from leadscore.training.metrics import METRICS, MetricCI
from leadscore.training.refit import refit_target
from leadscore.training.split import TARGETS, check_data, split_target
from leadscore.training.threads import configure_openmp

SCORED_COLUMNS = ["lead_id", "as_of", "p_sql", "p_opportunity", "rule_score", "y_sql", "y_opp",
                  "source", "industry", "employee_band", "days_since_created"]
GROUND_TRUTH_FILE = "ground_truth.parquet"


@dataclass
class TrainResult:
    #: the registered (shipped) model: the refit, or the backtest's model without one
    bundle: BoundBundle
    targets: dict[str, TargetResult]
    #: scored by the backtest's model: months it was not fitted on
    scored_calibration: pd.DataFrame
    scored_test: pd.DataFrame
    #: the backtest's model of the chosen kind (what the test metrics, plots and SLA report describe)
    backtest: BoundBundle | None = None
    #: per feature PSI / outside-range share, label rate by month (training.drift)
    drift: dict[str, Any] = field(default_factory=dict)
    #: per target: (beats the rule score and chance, the one-line verdict)
    verdicts: dict[str, tuple[bool, str]] = field(default_factory=dict)
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
    def target(r: TargetResult) -> dict[str, Any]:
        refit = r.refit.window() if r.refit is not None else None
        fitted_end = r.refit.rows.end if r.refit is not None else r.split.fitted_end
        return {**r.split.to_dict(), "rows": r.rows, "positives": r.positives, "fitted_end": fitted_end.isoformat(),
                "months": {p: r.split.months(p) for p in ("train", "validation", "calibration", "test")},
                **({"refit": refit} if refit is not None else {})}

    window: dict[str, Any] = {"cutoff": cutoff.isoformat(), "moments": n}
    window.update({t: target(r) for t, r in results.items()})
    return cast(TrainingWindow, window)


def _bundle(results: dict[str, TargetResult], models: dict[str, TargetModel], spec: Any, schema_hash: str,
            settings: Settings, cutoff: pd.Timestamp, n: int, trials: int) -> BoundBundle:
    cfg = settings.training
    return ScoringBundle(
        schema=spec, schema_hash=schema_hash, config_hash=settings.config_hash(), models=models,
        rules=settings.rules, window=_window(results, cutoff, n), attribution=settings.reasons.attribution,
        metrics={t: {"test": {m: _metrics_dict(v) for m, v in r.metrics.items()},
                     "calibration_method": r.model.calibrator.method,
                     "calibration_log_loss": r.choice.calibration_log_loss,
                     "capacity_share": r.capacity_share,
                     "share_of_ceiling_lift": r.share_of_ceiling_lift,
                     "model": r.model_record()} for t, r in results.items()},
        info={"seed": cfg.seed, "trials": trials, "trained_at": pd.Timestamp.now(tz="UTC").isoformat(),
              "best_params": {t: m.params for t, m in models.items()},
              "model_kinds": {t: m.kind for t, m in models.items()}, "drift_top_features": cfg.drift_top_features},
    ).bind(schema_hash=schema_hash)  # the producer: its features were computed under this hash


def _refit(dataset: pd.DataFrame, spec: Any, settings: Settings, cutoff: pd.Timestamp, r: TargetResult,
           progress: ProgressFn | None, client: Any = None) -> None:
    """Refit the target's chosen model on all matured months (training.refit); keep the backtest model if
    the refit's months lack an outcome."""
    _emit(progress, "phase", f"{r.target}: refit on all matured months")
    label = TARGETS[r.target]
    y = dataset[label].to_numpy(dtype=np.float64)
    labelled = dataset[label].notna().to_numpy()
    try:
        r.refit = refit_target(dataset, y, labelled, spec, settings.training, r.split, r.recency.chosen, r.choice,
                               r.fit, client)
    except ValueError:
        r.refit = None


def _drift(dataset: pd.DataFrame, spec: Any, results: dict[str, TargetResult], settings: Settings,
           cutoff: pd.Timestamp) -> dict[str, Any]:
    """Drift of the first target's test months against its backtest training rows; label rates of all."""
    first = next(iter(results.values()))
    test_rows = split_target(dataset, settings, cutoff, first.target)[1]["test"]
    rates = {t: label_rate_by_month(dataset["as_of"], dataset[TARGETS[t]].to_numpy(dtype=np.float64))
             for t in results}
    return drift_report(dataset, spec, first.fit_rows, test_rows, rates)


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
    account_moments: AccountMoments | None = None,
    dask_client: Any = None,
) -> TrainResult:
    """Train ``targets`` (default both) on a moments dataset (columns ``lead_id, as_of, <schema>,
    rule_score, y_sql, y_opp``; the stage policy's replay reads both labels).

    A one-label table (the flat path) trains one target: its bundle holds that one model, and the
    scored frames report its probability under both output names (see :func:`_scored_frame`). With ``log_to_mlflow`` (the default) everything is logged to a parent run with nested trial runs and
    the bundle is registered as the ``challenger``; ``out_dir`` keeps a copy of the bundle and artifacts.
    ``account_moments`` (:func:`training.account_calibration.training_moments`, from the event-log path)
    fit the account score's calibrator into both bundles.
    ``dask_client`` (a ``distributed.Client``): the production refit of a table of at least
    ``training.dask.min_rows`` rows is fitted on that cluster (:mod:`training.dask_fit`); the search stays here.
    Raises :class:`~training.split.InsufficientDataError` when a minimum is not met.
    """
    configure_openmp()  # before anything loads an OpenMP runtime (training.threads)
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
        if cfg.refit != "none":
            for r in results.values():
                _refit(dataset, spec, settings, cutoff, r, progress, dask_client)
                r.adopt_refit_choice()
        _emit(progress, "phase", "drift, bundle, stage policy and artifacts")
        drift = _drift(dataset, spec, results, settings, cutoff)
        verdicts = {t: verdict(t, r.shipped_choice.kind, r.metrics[SHIPPED]["roc_auc"].value,
                               r.metrics["rule"]["roc_auc"].value, drift, cfg.drift_top_features)
                    for t, r in results.items()}
        args = (spec, schema_hash, settings, cutoff, len(dataset), trials)
        backtest = _bundle(results, {t: r.model for t, r in results.items()}, *args)
        bundle = _bundle(results, {t: r.shipped for t, r in results.items()}, *args)
        _fit_bands(dataset, results, bundle, backtest, cfg.seed)
        if "opportunity" in results:
            from leadscore.training.account_calibration import calibrate_bundles

            opp = results["opportunity"]
            calibrate_bundles(account_moments, opp.split, backtest, bundle, settings, opp.refit)
        first = results[targets[0]].split
        as_of, known = dataset["as_of"], dataset[TARGETS[targets[0]]].notna()
        cal_mask = np.asarray((as_of >= first.validation_start) & (as_of < first.test_start) & known)
        test_mask = np.asarray((as_of >= first.test_start) & (as_of < first.test_end) & known)
        # the backtest model scores months it was not fitted on: the policy's fit and the SLA report are honest
        scored_cal = _scored_frame(dataset, backtest, cal_mask)
        scored_test = _scored_frame(dataset, backtest, test_mask)
        policy = _fit_policy(scored_cal, settings)
        bundle.stage_policy = backtest.stage_policy = policy
        example = dataset.loc[test_mask, bundle.feature_names].head(5).reset_index(drop=True)
        result = TrainResult(bundle=bundle, targets=results, scored_calibration=scored_cal, scored_test=scored_test,
                             backtest=backtest, drift=drift, verdicts=verdicts, example=example)
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


def _fit_bands(dataset: pd.DataFrame, results: dict[str, TargetResult], bundle: BoundBundle, backtest: BoundBundle,
               seed: int) -> None:
    """The fit/engagement grid's cut points (:mod:`training.bands`): each model's terciles over the labelled
    rows it was trained on (the refit's months for the shipped model, the backtest's training months for
    the backtest model)."""
    from leadscore.training.bands import BAND_TARGET, fit_bundle_bands

    r = results.get(BAND_TARGET)
    if r is None:
        return
    as_of, known = dataset["as_of"], dataset[TARGETS[BAND_TARGET]].notna()
    shipped_end = r.refit.rows.end if r.refit is not None else r.split.fitted_end
    fit_bundle_bands(bundle, dataset[(as_of < shipped_end) & known], seed)
    fit_bundle_bands(backtest, dataset[(as_of < r.split.validation_start) & known], seed)


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
    client: Any = None,
) -> TrainResult:
    """``leadscore train``: load and validate the CRM, build matured moments, train, log and register.

    ``client``: a Dask client; the moments are then built part by part on its cluster
    (:func:`features.dask_engine.build_frame_dask`), and the training runs here as without it.
    """
    configure_openmp()
    from leadscore.features.build import build_dataset
    from leadscore.features.schema import feature_schema, schema_hash
    from leadscore.history import is_database_url, load_history, read_parquet_table
    from leadscore.training.account_calibration import training_moments

    if client is not None:  # the moments built part by part on the cluster, rows sorted by lead and time
        from leadscore.features.dask_engine import build_frame_dask

        _emit(progress, "phase", "building point-in-time features and labels on the Dask cluster")
        dataset, build = build_frame_dask(crm_dir, settings, client, cutoff=cutoff)
        cutoff_ts = build.cutoff
        # the account calibrator's moments need every table of an account in one history; on the
        # cluster they are not built, so the raw noisy-OR ships
        account_moments: AccountMoments | None = None
        _emit(progress, "phase", "account score left uncalibrated: account moments are not built on Dask")
    else:
        _emit(progress, "phase", "loading CRM history")
        history, report = load_history(crm_dir, settings, cutoff=cutoff)
        if not report.usable:
            bad = {n: t.unusable for n, t in report.tables.items() if t.unusable}
            raise DataError(f"CRM history in {crm_dir} is not usable: {bad}")
        _emit(progress, "phase", "building point-in-time features and labels")
        dataset, _summary = build_dataset(history, settings)
        cutoff_ts = history.cutoff
        account_moments = training_moments(history, dataset, settings)
        del history  # from here on only the moments are needed; free the tables before boosting
    # ground_truth.parquet, or ground_truth/part-*.parquet in a partitioned generated CRM
    truth = None if is_database_url(crm_dir) else read_parquet_table(Path(crm_dir), Path(GROUND_TRUTH_FILE).stem)
    return train_from_dataset(
        dataset, feature_schema(settings), settings, cutoff_ts, schema_hash=schema_hash(settings),
        truth=truth, trials=trials, timeout=timeout, progress=progress, out_dir=out_dir,
        data_info={"crm_dir": _source_name(crm_dir), "moments": len(dataset)}, account_moments=account_moments,
        dask_client=client,  # the production refit goes to the cluster above training.dask.min_rows
    )


__all__ = ["METRICS", "TRUTH_COLUMNS", "TargetResult", "TrainResult", "attach_truth", "train", "train_from_dataset",
           "train_target"]
