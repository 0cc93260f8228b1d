"""AutoML as the yardstick: leadscore against FLAML and AutoGluon at equal wall-clock time, on the same rows.

Usage (benchmark extras, in their own virtualenv: AutoGluon pins pandas<2.4 and pyarrow<25)::

    python -m venv /tmp/bench && /tmp/bench/bin/pip install -e ".[bench]" torch==2.13.0
    LEADSCORE_SHARED_DATA=/path/to/shared/data /tmp/bench/bin/python benchmarks/automl.py \
        [--trials 30] [--leads 3000] [--months 12] [--seed 1] [--systems flaml,autogluon] [--datasets ...]

Caution: AutoGluon's pandas<2.4 changes what ``leadscore.history`` accepts from a generated CRM (under
pandas 2.3.3 it rejected 766 of 3,000 leads as "unknown account_id" and 5,308 of 5,400 stage changes,
most as "control characters in reason"), so the generated datasets there are not the main environment's;
Olist and X Education load the same rows in both (check ``rows_train`` / ``rows_test``).

Per dataset, leadscore runs first and is timed; each AutoML system then gets the same wall-clock
budget (per fold for cross-validation) on the same training rows and is scored on the same test rows.
leadscore's figure is the model a user gets, not the backtest's LightGBM: train's whole procedure
(:mod:`training.procedure`: recency, tuning, model choice among LightGBM / logistic / blends), then on
rows in time order its production refit on every pre-test row (the newest part calibrating), timed
end to end; ``leadscore_candidates`` lists every candidate it chose from, on the same test rows.

* ``x-education``: the 5 stratified folds of ``leadscore evaluate x-education`` (same seed, same
  mapping features); leadscore = :func:`training.evaluate.cross_validate`, pooled out-of-fold scores;
* ``olist``: the chronological split of ``leadscore evaluate olist`` (latest 20% of matured MQLs);
  the AutoML systems train on all pre-test rows (fit + early stopping + calibration parts);
* ``generated`` and ``generated-regime-shift``: ``leadscore generate`` (same seed, leads, months; the
  second with ``--scenario regime-shift``), the SQL target's month split of ``leadscore train``
  (train / validation / calibration / test months); leadscore refit on every pre-test month, AutoML
  on all pre-test months, all scored on the test months, with the ground truth's share of ceiling lift.

Both AutoML systems optimise log loss (a proper score, so their ECE is comparable); AutoGluon runs
``presets="medium_quality"`` on CPU. Output: one JSON line per dataset (each system's ROC AUC, log
loss, ECE with its bootstrap 95% interval, mean prediction against the observed rate, seconds) and a final summary line; on stderr, FLAML's final learner, its configuration and
its trial count per fit. ``--set KEY=VALUE`` measures a leadscore variant under the same protocol (e.g.
``training.refit=last_months``). Figures depend on the machine and its load; say so: the budget is
leadscore's wall time, and FLAML's trial count grows with it.

On the generated CRMs the AutoML systems fit the newest pre-test months, whose last ``H_sql`` days
carry labels that look into the test months (a lead's moment just before the test months, labelled by
its conversion inside them); leadscore's refit now fits those months too (``training.refit: cross_fit``),
so both sides see the same rows. Their older months' label rates are inflated by the moment sampling
(``moments.max_per_lead`` strata span a lead's whole history; README, Results), which an unweighted
system's level inherits (``training.moment_weights`` weighs leadscore's moments by the eligible moments
each stands for; the AutoML systems are given the features only). Each system's ``population`` figures
weight the test rows by their ``moment_weight``: they describe every moment production scores (the test
months are capped too), the plain figures the sample. ``--set moments.max_per_lead=100000`` measures on
every moment. Compare ECE with its
interval (``ece_ci``) and ``mean_p`` against ``rate``, over several ``--seed``: one run's gap is often noise.
Each AutoML system's line carries ``auc_gap``: leadscore's AUC minus its, with a paired bootstrap 95%
interval (resampling leads on the generated CRMs); an interval that spans 0 is no lead either way. On
stderr, AutoGluon's leaderboard (its validation rows are a random split of the training rows, so a
lead's other moments sit on both sides and its validation log loss is far below any test figure). Within
``medium_quality`` at these budgets it fits LightGBMXT (extra trees, learning rate 0.05) and little else,
boosting until that leaky early stop or until its time is up: on a loaded machine it boosts fewer rounds,
which tested *better* on the generated CRM, seed 1 (AUC 0.824 in 53 s loaded, 0.807 when it reached its
early stop, 30 s or 150 s unloaded; at load 5-7: 0.821 / 0.092 / 0.010 in 56 s, 0.827 / 0.084 / 0.004 in
90 s), so its figures there, its level (mean prediction 0.010 vs 0.020 in those two runs) included, move
with the machine's load and the budget.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

DATASETS = ("x-education", "olist", "generated", "generated-regime-shift")
SYSTEMS = ("flaml", "autogluon")
#: the LightGBM parameters a generated dataset's line reports (the tuned ones and the final learning rate)
TUNED = ("learning_rate", "num_leaves", "min_data_in_leaf", "feature_fraction", "bagging_fraction", "lambda_l2",
         "cat_smooth", "extra_trees")
Fitter = Callable[[pd.DataFrame, np.ndarray, pd.DataFrame, float, int], np.ndarray]


def _frame(features: pd.DataFrame) -> pd.DataFrame:
    """Features as both AutoML systems take them: text columns as pandas categories, numbers as float."""
    out = {}
    for col in features.columns:
        s = features[col]
        out[col] = s.astype("category") if not pd.api.types.is_numeric_dtype(s) else s.astype("float64")
    return pd.DataFrame(out)


def fit_flaml(X: pd.DataFrame, y: np.ndarray, X_test: pd.DataFrame, budget: float, seed: int) -> np.ndarray:
    from flaml import AutoML

    automl = AutoML()
    automl.fit(X, y.astype(int), task="classification", metric="log_loss", time_budget=max(budget, 1.0),
               n_jobs=2, verbose=0, seed=seed)
    # what FLAML ended with, so a gap can be traced to a learner, its parameters or its trial count
    print(json.dumps({"flaml_best": {"estimator": automl.best_estimator, "config": automl.best_config,
                                     "best_iteration": automl.best_iteration, "val_loss": automl.best_loss,
                                     "trials": len(automl.config_history), "rows": len(y)}}, default=str),
          file=sys.stderr, flush=True)
    return np.asarray(automl.predict_proba(X_test))[:, 1]


def fit_autogluon(X: pd.DataFrame, y: np.ndarray, X_test: pd.DataFrame, budget: float, seed: int) -> np.ndarray:
    from autogluon.tabular import TabularPredictor

    with tempfile.TemporaryDirectory(prefix="leadscore-ag-") as path:
        predictor = TabularPredictor(label="__y__", problem_type="binary", eval_metric="log_loss", path=path,
                                     verbosity=0)
        predictor.fit(X.assign(__y__=y.astype(int)), presets="medium_quality", time_limit=max(budget, 5.0),
                      num_cpus=2, num_gpus=0, ag_args_fit={"random_seed": seed})
        # which of its models won and how the ensemble weighs them, so a gap can be traced to a model
        board = predictor.leaderboard(silent=True)
        print(json.dumps({"autogluon_best": {"model": predictor.model_best, "rows": len(y), "leaderboard": [
            {"model": r["model"], "val_log_loss": round(-float(r["score_val"]), 5), "fit_s": round(float(r["fit_time"]), 1)}
            for _, r in board.iterrows()]}}), file=sys.stderr, flush=True)
        return np.asarray(predictor.predict_proba(X_test, as_multiclass=False), dtype=np.float64)


FITTERS: dict[str, Fitter] = {"flaml": fit_flaml, "autogluon": fit_autogluon}


def _scores(y: np.ndarray, p: np.ndarray, settings: Any, seconds: float) -> dict[str, Any]:
    from leadscore.training.metrics import evaluate_metrics

    m = evaluate_metrics(y, np.clip(p, 1e-6, 1 - 1e-6), n_boot=200, n_bins=settings.training.ece_bins, seed=0)
    # the mean prediction against the observed rate: an ECE gap is mostly a level gap on these test rows
    return {"roc_auc": round(m["roc_auc"].value, 4), "log_loss": round(m["log_loss"].value, 4),
            "ece": round(m["ece"].value, 4), "ece_ci": [round(m["ece"].lo, 4), round(m["ece"].hi, 4)],
            "mean_p": round(float(np.mean(p)), 4), "rate": round(float(np.mean(y)), 4), "seconds": round(seconds, 1)}


def _auc_gap(y: np.ndarray, p_ours: np.ndarray, p_theirs: np.ndarray, groups: np.ndarray | None = None,
             n_boot: int = 200, seed: int = 0) -> list[float]:
    """leadscore's AUC minus another system's on the same rows, with a paired bootstrap 95% interval.

    Paired: both systems are scored on each resample, so the interval is the gap's own, much narrower
    than two separate AUC intervals. ``groups`` (lead ids) resample whole leads, as a lead's moments are
    not independent; without them, rows.
    """
    from sklearn.metrics import roc_auc_score

    keys = np.unique(groups, return_inverse=True)[1] if groups is not None else np.arange(len(y))
    rng = np.random.default_rng(seed)
    gaps = []
    for _ in range(n_boot):
        w = np.bincount(rng.integers(0, keys.max() + 1, keys.max() + 1), minlength=keys.max() + 1)[keys]
        if len(np.unique(y[w > 0])) == 2:
            gaps.append(roc_auc_score(y, p_ours, sample_weight=w) - roc_auc_score(y, p_theirs, sample_weight=w))
    point = roc_auc_score(y, p_ours) - roc_auc_score(y, p_theirs)
    return [round(float(point), 4), round(float(np.quantile(gaps, 0.025)), 4), round(float(np.quantile(gaps, 0.975)), 4)]


def _with_gaps(result: dict[str, dict[str, Any]], y: np.ndarray, scores: dict[str, np.ndarray],
               groups: np.ndarray | None = None) -> dict[str, dict[str, Any]]:
    """Each AutoML system's line gains ``auc_gap``: leadscore's AUC minus its, with the paired interval."""
    for name, p in scores.items():
        if name != "leadscore":
            result[name]["auc_gap"] = _auc_gap(y, scores["leadscore"], p, groups)
    return result


def _candidates(y: np.ndarray, scores: dict[str, np.ndarray], settings: Any) -> dict[str, dict[str, float]]:
    """AUC and ECE of each model-choice candidate leadscore compared (the shipped one among them)."""
    out = {}
    for name, p in scores.items():
        if name not in ("shipped", "rule"):
            m = _scores(y, p, settings, 0.0)
            out[name] = {"roc_auc": m["roc_auc"], "log_loss": m["log_loss"], "ece": m["ece"]}
    return out


def _automl(systems: list[str], X: pd.DataFrame, y: np.ndarray, train: np.ndarray, test: np.ndarray,
            budget: float, seed: int) -> dict[str, tuple[np.ndarray, float]]:
    out = {}
    for name in systems:
        started = time.perf_counter()
        p = FITTERS[name](X.iloc[train], y[train], X.iloc[test], budget, seed)
        out[name] = (p, time.perf_counter() - started)
    return out


def bench_x_education(settings: Any, systems: list[str]) -> dict[str, Any]:
    from sklearn.model_selection import StratifiedKFold

    from leadscore.config import mappings_dir
    from leadscore.training.evaluate import BAG_FOLDS, cross_validate, shared_data_dir, shipped_models
    from leadscore.training.flat import load_mapping, prepare_flat, read_flat

    mapping = load_mapping(Path(str(mappings_dir() / "x_education.yaml")))
    data = prepare_flat(read_flat(shared_data_dir() / "x_education" / "Leads.csv"), mapping)
    started = time.perf_counter()
    oof, details = cross_validate(data, settings, settings.training.trials, bag_folds=BAG_FOLDS)
    seconds = time.perf_counter() - started
    budget = seconds / 5
    X, y = _frame(data.features), data.y
    pooled = {name: np.full(len(y), np.nan) for name in systems}
    spent = dict.fromkeys(systems, 0.0)
    # the folds of cross_validate: StratifiedKFold(5, shuffle=True, random_state=training.seed)
    folds = StratifiedKFold(5, shuffle=True, random_state=settings.training.seed).split(data.features, y)
    for k, (tr, te) in enumerate(folds):
        for name, (p, sec) in _automl(systems, X, y, tr, te, budget, settings.training.seed + k).items():
            pooled[name][te], spent[name] = p, spent[name] + sec
    result = {"leadscore": _scores(y, oof["shipped"], settings, seconds)}
    result.update({name: _scores(y, pooled[name], settings, spent[name]) for name in systems})
    _with_gaps(result, y, {"leadscore": oof["shipped"], **pooled})
    return {"dataset": "x-education", "protocol": "stratified 5-fold CV (leadscore evaluate's folds), pooled",
            "rows_test": len(y), "budget_seconds": round(seconds, 1), "leadscore_shipped": shipped_models(details),
            "leadscore_candidates": _candidates(y, oof, settings), "systems": result}


def bench_olist(settings: Any, systems: list[str]) -> dict[str, Any]:
    from leadscore.config import mappings_dir
    from leadscore.training.evaluate import (
        _subset,
        chronological,
        olist_flat_frame,
        shared_data_dir,
        shipped_models,
    )
    from leadscore.training.flat import load_mapping, prepare_flat

    mapping = load_mapping(Path(str(mappings_dir() / "olist.yaml")))
    frame, matured, _ = olist_flat_frame(shared_data_dir(), mapping.horizon_days)
    data = _subset(prepare_flat(frame, mapping), np.flatnonzero(matured.to_numpy()))
    started = time.perf_counter()
    test, scores, details = chronological(data, settings, settings.training.trials)
    seconds = time.perf_counter() - started
    pre = np.setdiff1d(np.arange(len(data.y)), test)
    fitted = _automl(systems, _frame(data.features), data.y, pre, test, seconds, settings.training.seed)
    result = {"leadscore": _scores(data.y[test], scores["shipped"], settings, seconds)}
    result.update({name: _scores(data.y[test], p, settings, sec) for name, (p, sec) in fitted.items()})
    _with_gaps(result, data.y[test], {"leadscore": scores["shipped"], **{k: p for k, (p, _) in fitted.items()}})
    return {"dataset": "olist", "protocol": "chronological, latest 20% of matured MQLs (leadscore evaluate's)",
            "rows_train": len(pre), "rows_test": len(test), "budget_seconds": round(seconds, 1),
            "leadscore_shipped": f"{shipped_models(details)}, recency {details['model']['recency']}",
            "leadscore_candidates": _candidates(data.y[test], scores, settings), "systems": result}


def bench_generated(settings: Any, systems: list[str], scenario: str, leads: int, months: int, seed: int,
                    root: Path) -> dict[str, Any]:
    from leadscore.features.build import build_dataset
    from leadscore.features.moments import WEIGHT_COLUMN
    from leadscore.features.schema import feature_schema
    from leadscore.generate import generate_crm
    from leadscore.history import load_history
    from leadscore.scenarios import scenario_named
    from leadscore.training.bundle import schema_dicts
    from leadscore.training.choice import candidate_name
    from leadscore.training.metrics import population_metrics
    from leadscore.training.procedure import Roles, choose_and_fit, refit_scores
    from leadscore.training.train import GROUND_TRUTH_FILE, attach_truth, split_target

    crm = root / f"crm-{scenario}-{leads}-{months}-{seed}"
    if not (crm / "manifest.json").exists():
        generate_crm(crm, n_leads=leads, months=months, seed=seed, settings=settings,
                     scenario=scenario_named(scenario))
    history, _ = load_history(crm, settings, write_rejected=False)
    dataset, _ = build_dataset(history, settings)
    dataset = dataset.reset_index(drop=True)
    cutoff = history.cutoff
    spec = schema_dicts(feature_schema(settings))
    truth = attach_truth(dataset, pd.read_parquet(crm / GROUND_TRUTH_FILE))
    split, rows = split_target(dataset, settings, cutoff, "sql")
    y = dataset["y_sql"].to_numpy(dtype=np.float64)
    roles = Roles(rows["train"], rows["validation"], rows["calibration"], rows["test"], split.validation_start)
    started = time.perf_counter()
    # train's procedure (recency, tuning, model choice), then its production refit on every pre-test month
    chosen = choose_and_fit(dataset, y, roles, spec, settings.training, trials=settings.training.trials)
    refit, record = refit_scores(dataset, y, roles, spec, settings.training, chosen)
    seconds = time.perf_counter() - started
    pre = np.sort(np.concatenate([rows["train"], rows["validation"], rows["calibration"]]))
    test = rows["test"]
    X = _frame(dataset[[c["name"] for c in spec]])
    fitted = _automl(systems, X, y, pre, test, seconds, settings.training.seed)
    t = truth["p_sql_30d"].to_numpy(dtype=np.float64)[test]
    ok = np.isfinite(t)  # all systems on the rows with a truth, as train does
    all_scores = {"leadscore": (refit["shipped"], seconds), **fitted}
    result = {name: _scores(y[test][ok], p[ok], settings, sec) for name, (p, sec) in all_scores.items()}
    ceiling = _scores(y[test][ok], t[ok], settings, 0.0)
    w_test = dataset[WEIGHT_COLUMN].to_numpy(dtype=np.float64)[test][ok]
    for name, (p, _sec) in all_scores.items():
        result[name]["population"] = population_metrics(y[test][ok], p[ok], w_test, settings.training.ece_bins)
    ceiling["population"] = population_metrics(y[test][ok], t[ok], w_test, settings.training.ece_bins)
    lead_ids = dataset["lead_id"].to_numpy()[test][ok]  # the gap's interval resamples leads, not moments
    _with_gaps(result, y[test][ok], {k: p[ok] for k, (p, _) in all_scores.items()}, lead_ids)
    for r in result.values():
        r["share_of_ceiling_lift"] = round((r["roc_auc"] - 0.5) / (ceiling["roc_auc"] - 0.5), 4)
    return {"dataset": "generated" if scenario == "default" else f"generated-{scenario}",
            "protocol": f"SQL target, leadscore train's month split: test {', '.join(split.months('test'))}",
            "crm": {"leads": leads, "months": months, "seed": seed, "scenario": scenario},
            "rows_train": len(pre), "rows_test": int(ok.sum()), "budget_seconds": round(seconds, 1),
            "leadscore_shipped": f"{record['model']} (backtest's choice "
                                 f"{candidate_name(chosen.choice.kind, chosen.choice.blend_weight)}), "
                                 f"recency {chosen.recency.chosen.label}",
            "leadscore_candidates": _candidates(y[test][ok], {k: v[ok] for k, v in refit.items()}, settings),
            "leadscore_refit": {**record, "params": {k: v for k, v in chosen.fit.params.items() if k in TUNED}},
            "ceiling": {k: ceiling[k] for k in ("roc_auc", "log_loss", "ece", "population")}, "systems": result}


def summary(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """Per system and dataset the AUC and ECE; where leadscore leads (AUC) and is better calibrated (ECE)."""
    out: dict[str, Any] = {"summary": {}, "leadscore_leads_auc": {}, "leadscore_best_ece": {}}
    for line in lines:
        systems = line["systems"]
        out["summary"][line["dataset"]] = {k: {"roc_auc": v["roc_auc"], "ece": v["ece"]} for k, v in systems.items()}
        others = [v for k, v in systems.items() if k != "leadscore"]
        ls = systems["leadscore"]
        out["leadscore_leads_auc"][line["dataset"]] = all(ls["roc_auc"] >= o["roc_auc"] for o in others)
        out["leadscore_best_ece"][line["dataset"]] = all(ls["ece"] <= o["ece"] for o in others)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=30, help="leadscore's Optuna trials (sets its time, so the budget)")
    ap.add_argument("--leads", type=int, default=3000)
    ap.add_argument("--months", type=int, default=12)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override for leadscore (e.g. training.refit=last_months to measure a variant)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "leadscore-bench-automl")
    args = ap.parse_args()
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{args.work / 'mlruns.db'}")
    args.work.mkdir(parents=True, exist_ok=True)

    from leadscore.config import load_settings
    from leadscore.env import set_offline_env

    set_offline_env()
    settings = load_settings(None, [f"training.trials={args.trials}", "training.bootstrap_samples=20", *args.set])
    systems = [s for s in args.systems.split(",") if s]
    lines = []
    for name in [d for d in args.datasets.split(",") if d]:
        if name == "x-education":
            line = bench_x_education(settings, systems)
        elif name == "olist":
            line = bench_olist(settings, systems)
        elif name in ("generated", "generated-regime-shift"):
            scenario = "default" if name == "generated" else "regime-shift"
            line = bench_generated(settings, systems, scenario, args.leads, args.months, args.seed, args.work)
        else:
            sys.exit(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
        line["leadscore_trials"] = args.trials
        lines.append(line)
        print(json.dumps(line), flush=True)
    print(json.dumps(summary(lines)), flush=True)


if __name__ == "__main__":
    main()
