"""The backtest of one target: choose everything on held-out months, measure the procedure on test months.

Per target (months from :func:`training.split.split_target`):

1. recency (window and decay half-life) chosen on the validation months (:func:`training.choice.choose_recency`);
2. :func:`training.fit.fit_target` with the months in its roles: Optuna search on a time-stratified
   sample of the (windowed, weighted) training months, pruned and early-stopped on the validation months;
   final model on all of them; calibration on the calibration months;
3. the logistic model on the same rows and weights; the model kind (LightGBM, logistic, blend) chosen
   by calibrated log loss on the calibration months (:func:`training.choice.choose_model`);
4. the test months scored by the chosen model (``shipped``), LightGBM alone, the rule score and the
   logistic baseline as it was always fitted (all training months, unweighted), and on a generated CRM
   the ground-truth ceiling, every metric with a bootstrap 95% CI.

These figures describe the *procedure*; the registered model is its refit (:mod:`training.refit`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from leadscore.config import Settings
from leadscore.training.baselines import baseline_scores, fit_rule_probability, rule_probability
from leadscore.training.bundle import FeatureColumn, TargetModel
from leadscore.training.calibration import map_weights
from leadscore.training.choice import ModelChoice, RecencyChoice, candidate_name
from leadscore.training.fit import FitResult
from leadscore.training.linear import LinearModel
from leadscore.training.metrics import MetricCI, evaluate_metrics, population_metrics
from leadscore.training.procedure import Roles, candidate_scores, choose_and_fit
from leadscore.training.refit import Refit
from leadscore.training.split import TARGETS, TimeSplit, split_target, stratified_time_sample
from leadscore.training.tune import TuneResult

TRUTH_COLUMNS = {"sql": "p_sql_30d", "opportunity": "p_opp_90d"}
#: the model the shipped metrics are under in ``TargetResult.metrics``
SHIPPED = "shipped"

#: called with (event, payload): "phase" (str), "trial" (target, trial record), "target_done" (target)
ProgressFn = Callable[[str, Any], None]


@dataclass
class TargetResult:
    """Everything learned and measured for one target."""

    target: str
    split: TimeSplit
    fit: FitResult
    #: the backtest's model of the chosen kind (what the test metrics describe)
    model: TargetModel
    metrics: dict[str, dict[str, MetricCI]]
    rows: dict[str, int]
    positives: dict[str, int]
    capacity_share: float
    recency: RecencyChoice
    choice: ModelChoice
    #: positions of the backtest's fitting rows (after the recency window)
    fit_rows: np.ndarray
    share_of_ceiling_lift: float | None = None
    #: the production refit (None when ``training.refit`` is ``none`` or the refit months lack an outcome)
    refit: Refit | None = None
    #: per model, the test months' figures over every scoring moment (rows weighted by ``moment_weight``,
    #: :func:`training.metrics.population_metrics`); ``metrics`` describe the sampled moments. Empty
    #: without moment weights (a flat table's rows are all its moments)
    population: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def tune(self) -> TuneResult:
        return self.fit.tune

    @property
    def importance(self) -> pd.Series:
        return self.fit.importance

    @property
    def shipped(self) -> TargetModel:
        """The model that is registered: the refit, else the backtest's model."""
        return self.refit.model if self.refit is not None else self.model

    @property
    def shipped_choice(self) -> ModelChoice:
        """The registered kind: the refit's choice (``model_choice.at_refit``), else the backtest's."""
        if self.refit is not None and self.refit.choice is not None:
            return self.refit.choice
        return self.choice

    def adopt_refit_choice(self) -> None:
        """When the refit chose another kind than the backtest, report that kind's backtest figures as
        ``shipped``: the metrics then describe the procedure with the kind that is registered."""
        c = self.shipped_choice
        key = candidate_key(candidate_name(c.kind, c.blend_weight))
        if c is not self.choice and key in self.metrics:
            self.metrics[SHIPPED] = self.metrics[key]
            if key in self.population:
                self.population[SHIPPED] = self.population[key]
            self.share_of_ceiling_lift = _ceiling_share(self.metrics)

    def model_record(self) -> dict[str, Any]:
        """What the bundle's metrics record about the choice of the shipped model."""
        return {"kind": self.shipped_choice.kind, "blend_weight": self.shipped_choice.blend_weight,
                "backtest_kind": candidate_name(self.choice.kind, self.choice.blend_weight),
                "candidates_log_loss": self.choice.log_loss, "recency": self.recency.chosen.to_dict(),
                "recency_validation_log_loss": self.recency.validation_log_loss,
                "metrics_describe": "backtest of the procedure on the test months",
                "registered": "refit on all matured months" if self.refit is not None else "the backtest model",
                **({"refit": self.refit.window()} if self.refit is not None else {})}


def candidate_key(name: str) -> str:
    """The metrics key of a model candidate's backtest scores (``candidate blend 0.75``)."""
    return f"candidate {name}"


def _ceiling_share(metrics: dict[str, dict[str, MetricCI]]) -> float | None:
    """The shipped model's share of the ground truth's AUC lift over chance (generated CRMs only)."""
    if "ground_truth" not in metrics:
        return None
    auc_truth = metrics["ground_truth"]["roc_auc"].value
    return (metrics[SHIPPED]["roc_auc"].value - 0.5) / (auc_truth - 0.5) if auc_truth > 0.5 else None


def _emit(progress: ProgressFn | None, event: str, payload: Any) -> None:
    if progress is not None:
        progress(event, payload)


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


def capacity_share(settings: Settings, rule: np.ndarray) -> float:
    if settings.training.capacity_share is not None:
        return settings.training.capacity_share
    share = float(np.mean(np.nan_to_num(rule) >= settings.rules.mql_threshold))
    return share if 0.0 < share < 1.0 else 0.1


def backtest_model(fit: FitResult, choice: ModelChoice, linear: LinearModel | None) -> TargetModel:
    """The backtest's model of the chosen kind, calibrated as chosen."""
    trees = choice.kind != "logistic"
    return TargetModel(model_str=fit.model_string() if trees else None, encodings=fit.encodings,
                       calibrator=choice.calibrator, params={**fit.params, "num_iterations": fit.rounds[0]},
                       kind=choice.kind, linear=linear if choice.kind != "lightgbm" else None,
                       blend_weight=choice.blend_weight)


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
    """Backtest one target (module docstring). Months play the procedure's roles: train (windowed) = fit,
    its time-stratified sample = tune, validation = early stopping, calibration = calibration, test = test."""
    cfg = settings.training
    split, rows = split_target(dataset, settings, cutoff, target)
    y = dataset[TARGETS[target]].to_numpy(dtype=np.float64)
    as_of = dataset["as_of"]
    say = lambda text: _emit(progress, "phase", f"{target}: {text}")  # noqa: E731
    chosen = choose_and_fit(dataset, y, Roles(rows["train"], rows["validation"], rows["calibration"], rows["test"],
                                              split.validation_start),
                            schema, cfg, trials=trials, timeout=timeout, on_trial=on_trial, progress=say)
    fit, choice = chosen.fit, chosen.choice

    say("backtest")
    rule = dataset["rule_score"].to_numpy(dtype=np.float64)
    lr_rows = rows["train"][stratified_time_sample(as_of.iloc[rows["train"]], cfg.logreg_max_rows, cfg.seed)]
    if chosen.linear is not None and chosen.fit_weights is None and np.array_equal(chosen.fit_rows, lr_rows):
        # the logistic candidate learnt from these very rows, unweighted: it is the baseline, fitted once
        rule_map = fit_rule_probability(rule[rows["calibration"]], y[rows["calibration"]])
        baselines = {"logistic": np.asarray(chosen.linear_raw["test"]),
                     "rule": rule_probability(rule_map, rule[rows["test"]])}
    else:
        baselines = baseline_scores(dataset, y, rule, schema, logistic_rows=lr_rows, rule_rows=rows["calibration"],
                                    test_rows=rows["test"], seed=cfg.seed)
    cap = capacity_share(settings, rule[rows["test"]])
    scores = {SHIPPED: chosen.shipped_scores(), "lightgbm": fit.scores("test"), "lightgbm_uncalibrated": fit.raw["test"],
              **baselines}
    if cfg.model_choice.at_refit and chosen.linear is not None:
        # the refit may choose another kind (training.refit.refit_choice): every candidate is backtested
        scores.update({candidate_key(name): p for name, p in
                       candidate_scores(chosen.raw, y[rows["calibration"]], choice, cfg,
                                        map_weights(dataset.iloc[rows["calibration"]], cfg)).items() if name != SHIPPED})
    from leadscore.features.moments import WEIGHT_COLUMN  # numba: not at import time

    yt = y[rows["test"]]
    wt = dataset[WEIGHT_COLUMN].to_numpy(dtype=np.float64)[rows["test"]] if WEIGHT_COLUMN in dataset else None
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
            wt = wt[ok] if wt is not None else None
            ceiling = True
    metrics = {
        name: evaluate_metrics(yt, p, capacity_share=cap, n_boot=cfg.bootstrap_samples, n_bins=cfg.ece_bins,
                               seed=cfg.seed)
        for name, p in scores.items()
    }
    population = {name: population_metrics(yt, p, wt, cfg.ece_bins) for name, p in scores.items()
                  if name != "lightgbm_uncalibrated"} if wt is not None and 0 < yt.sum() < len(yt) else {}
    share = _ceiling_share(metrics) if ceiling else None
    _emit(progress, "target_done", target)
    return TargetResult(
        target=target, split=split, fit=fit, model=backtest_model(fit, choice, chosen.linear), metrics=metrics,
        rows={p: len(r) for p, r in rows.items()}, positives={p: int(y[r].sum()) for p, r in rows.items()},
        capacity_share=cap, recency=chosen.recency, choice=choice, fit_rows=chosen.fit_rows,
        share_of_ceiling_lift=share, population=population,
    )


__all__ = ["SHIPPED", "TRUTH_COLUMNS", "TargetResult", "attach_truth", "candidate_key", "capacity_share", "train_target"]
