"""Evaluation on public lead datasets: how the flat-table path does on real, messy data.

Two datasets (read from the shared data directory, never copied into the package):

* **X Education** (``x_education/Leads.csv``): web leads of an online-course company, label
  ``Converted``. Sales-entered fields and snapshots are excluded by the mapping
  (``configs/mappings/x_education.yaml``). The file has no dates, so the protocol is stratified
  5-fold cross-validation; metrics are computed on the pooled out-of-fold predictions.
* **Olist** (``olist_funnel/``): MQLs of a Brazilian marketplace → won deal. Only what is known at MQL
  time is used (``origin``, ``landing_page_id``, ``first_contact_date`` and point-in-time counts
  derived from earlier MQLs). Label: won within ``horizon_days`` of first contact; MQLs whose horizon
  runs past the last recorded win are censored (their deal could still close). Protocol:
  chronological — the latest 20% of matured MQLs are the test set.

Every model is fitted inside its training part only. LightGBM goes through the same procedure as
``leadscore train`` (:func:`training.fit.fit_target`): category codes, Optuna tuning and early
stopping on an early-stopping part, the final fit at the reduced learning rate, and calibration on a
calibration part that no model was fitted or stopped on. In cross-validation the parts are stratified
shares of the outer training folds and the tuned parameters are refitted as five fold models over the
fit + early-stopping rows (each stopped early on its own held-out fold), averaged; on the
chronological split they are consecutive periods (fit, early stopping, then calibration nearest the
test). Three scores are compared on the same rows: the calibrated LightGBM model, a logistic
regression on the same features, and the mapping's points rule (both fitted on all pre-test rows:
they have no early stopping or calibration step of their own).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from leadscore.config import mappings_dir
from leadscore.errors import DataError
from leadscore.training.fit import RowSets
from leadscore.training.flat import FlatData, FlatMapping, check_leakage, load_mapping, prepare_flat

if TYPE_CHECKING:
    from leadscore.config import Settings
    from leadscore.training.metrics import MetricCI

DATA_ENV = "LEADSCORE_SHARED_DATA"
REPO_ROOT = Path(__file__).resolve().parent.parent
REPORTED = ("roc_auc", "pr_auc", "log_loss", "ece", "brier", "top_decile_lift")
GOALS = {"x-education": 0.89, "olist": 0.68}
REFERENCE = {"x-education": 0.874, "olist": 0.661}
MODEL_CHOICE_NOTE = ("model choice as in `leadscore train`: LightGBM, logistic and their log-odds blends, "
                     "each calibrated, compared by out-of-fold log loss on the calibration rows")
REFIT_NOTE = ("every candidate refit (chosen rounds, window and decay) on the fit + early-stopping rows, "
              "calibrated on the calibration rows, scores the test rows: what `train` would register")
#: fold models averaged per outer CV fold (measured on X Education: pooled AUC +0.002, log loss -0.004)
BAG_FOLDS = 5


class DataMissingError(DataError):
    """The public dataset is not where it should be; the message says where it was looked for."""


def shared_data_dir() -> Path:
    """``$LEADSCORE_SHARED_DATA``, else ``<repo root>/../shared/data`` (CI clones with shared/ beside it)."""
    env = os.environ.get(DATA_ENV)
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


@dataclass
class EvalResult:
    """What one evaluation measured, ready to print and to write as JSON/markdown."""

    dataset: str
    protocol: str
    rows: int
    positives: int
    metrics: dict[str, dict[str, MetricCI]]
    goal_auc: float | None = None  # a user's own file has no agreed goal or reference
    reference_auc: float | None = None
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    #: distinguishes the reports of one dataset under several protocols (``evaluate --flat``)
    report_suffix: str = ""

    @property
    def goal_met(self) -> bool | None:
        if self.goal_auc is None:
            return None
        return self.metrics["shipped"]["roc_auc"].value >= self.goal_auc

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "protocol": self.protocol,
            "rows": self.rows,
            "positives": self.positives,
            "metrics": {m: {k: v.to_dict() for k, v in ms.items()} for m, ms in self.metrics.items()},
            "goal": None if self.goal_auc is None else {
                "metric": "roc_auc", "target": self.goal_auc, "met": self.goal_met,
                "reference_gradient_boosting": self.reference_auc},
            "notes": self.notes,
            "details": self.details,
        }


# --------------------------------------------------------------------------------------------------
# One fit: tune, early stop, calibrate (model); logistic; rule — all on the training part only
# --------------------------------------------------------------------------------------------------


def _subset(data: FlatData, idx: np.ndarray) -> FlatData:
    return FlatData(
        features=data.features.iloc[idx].reset_index(drop=True), schema=data.schema, y=data.y[idx],
        as_of=data.as_of.iloc[idx].reset_index(drop=True), lead_id=data.lead_id.iloc[idx].reset_index(drop=True),
        rule_score=data.rule_score[idx], real_time=data.real_time, notes=data.notes, excluded=data.excluded,
    )


def fit_and_score(
    data: FlatData, rows: RowSets, settings: Settings, trials: int, seed: int, bag_folds: int = 1,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Scores on ``rows.test`` of the shipped model, every candidate it was chosen from, and the rule.

    The procedure of ``leadscore train`` (:func:`training.procedure.choose_and_fit`) with the parts in
    its roles: ``fit`` = train, ``early_stop`` = validation (Optuna, early stopping, recency),
    ``calibration`` = calibration (calibration method and model choice). Rows in time order
    (``bag_folds`` < 2, the chronological protocol) then get the production refit
    (:mod:`training.refit`): every candidate refit on the fit and early-stopping rows inside the chosen
    window, calibrated on the calibration rows, and that is what scores the test rows. Cross-validation
    folds mix periods, so there recency is not chosen and the ``bag_folds`` fold models over fit +
    early stopping (the logistic model on the same rows) are what would ship. The rule's Platt map is
    fitted on all pre-test rows.
    """
    from leadscore.training.baselines import fit_rule_probability, rule_probability
    from leadscore.training.choice import candidate_name
    from leadscore.training.procedure import Roles, candidate_scores, choose_and_fit, refit_scores

    if rows.test is None:
        raise ValueError("fit_and_score needs test rows to score")
    cfg = settings.training
    timed = bag_folds < 2
    frame = data.features.assign(as_of=data.as_of.to_numpy()) if timed else data.features
    start = pd.Timestamp(data.as_of.iloc[rows.early_stop].min()) if timed else None
    roles = Roles(rows.fit, rows.early_stop, rows.calibration, rows.test, start)
    chosen = choose_and_fit(frame, data.y, roles, data.schema, cfg, trials=trials, seed=seed, bag_folds=bag_folds)
    choice, y_cal = chosen.choice, data.y[rows.calibration]
    refit: dict[str, Any] = {}
    if timed:
        scores, refit["refit"] = refit_scores(frame, data.y, roles, data.schema, cfg, chosen)
    else:
        scores = candidate_scores(chosen.raw, y_cal, choice, cfg)
    before = np.sort(np.concatenate([rows.fit, rows.early_stop, rows.calibration]))
    rule_map = fit_rule_probability(data.rule_score[before], data.y[before])
    scores["rule"] = rule_probability(rule_map, data.rule_score[rows.test])
    info = {**chosen.fit.summary(), "importance": chosen.fit.importance.to_dict(),
            # in time order the refit chooses the kind again (model_choice.at_refit): its choice is what scored
            "model": {"shipped": refit["refit"]["model"] if timed else candidate_name(choice.kind, choice.blend_weight),
                      "kind": choice.kind,
                      "blend_weight": choice.blend_weight, "calibration": choice.calibrator.method,
                      "candidates_log_loss": choice.log_loss, "recency": chosen.recency.chosen.to_dict(),
                      "recency_validation_log_loss": chosen.recency.validation_log_loss}, **refit}
    return {"shipped": scores.pop("shipped"), **scores}, info


def _metrics(y: np.ndarray, scores: dict[str, np.ndarray], settings: Settings) -> dict[str, dict[str, MetricCI]]:
    from leadscore.training.metrics import evaluate_metrics

    cfg = settings.training
    return {name: evaluate_metrics(y, p, n_boot=cfg.bootstrap_samples, n_bins=cfg.ece_bins, seed=cfg.seed)
            for name, p in scores.items()}


def _calibrations(details: dict[str, Any]) -> str:
    methods = [f["calibration"] for f in details["folds"]]
    return ", ".join(f"{m} in {methods.count(m)} fold(s)" for m in sorted(set(methods)))


def cross_validate(data: FlatData, settings: Settings, trials: int, folds: int = 5, bag_folds: int = 0,
                   calibration_share: float = 0.2,
                   valid_share: float = 0.2) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Stratified k-fold: out-of-fold scores for every row.

    Inside each outer fold the training part is split, stratified, into calibration
    (``calibration_share``), early stopping (``valid_share`` of the rest) and fit rows; with
    ``bag_folds`` >= 2 the fold models cover fit + early stopping (see :func:`training.fit.fit_target`).
    """
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, train_test_split

    seed = settings.training.seed
    oof: dict[str, np.ndarray] = {}
    per_fold = []
    for k, (tr, te) in enumerate(StratifiedKFold(folds, shuffle=True, random_state=seed).split(data.features, data.y)):
        learn, cal = train_test_split(tr, test_size=calibration_share, stratify=data.y[tr], random_state=seed + k)
        fit, stop = train_test_split(learn, test_size=valid_share, stratify=data.y[learn], random_state=seed + k)
        rows = RowSets(fit=np.sort(fit), early_stop=np.sort(stop), calibration=np.sort(cal), test=te)
        scores, info = fit_and_score(data, rows, settings, trials, seed + k, bag_folds=bag_folds)
        for name, p in scores.items():
            oof.setdefault(name, np.full(len(data.y), np.nan))[te] = p
        info["auc"] = {name: float(roc_auc_score(data.y[te], p)) for name, p in scores.items()}
        per_fold.append(info)
    return oof, {"folds": per_fold}


def chronological(data: FlatData, settings: Settings, trials: int, test_share: float = 0.2,
                  valid_share: float = 0.3,
                  calibration_share: float = 0.2) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, Any]]:
    """Latest ``test_share`` of rows (by time) is the test set; of the rest, oldest to newest: fit,
    early stopping (``valid_share``) and calibration (``calibration_share``, the latest, nearest the test).

    The early-stopping part steers Optuna, so it must hold enough positives: on Olist, 20% (~170 wins)
    made the tuned model swing by ±0.02 AUC with the trial count; 30% is steadier.
    """
    order = np.argsort(data.as_of.to_numpy(), kind="stable")
    n_test = round(len(order) * test_share)
    pre, test = order[: len(order) - n_test], order[len(order) - n_test:]
    n_cal, n_val = round(len(pre) * calibration_share), round(len(pre) * valid_share)
    train, valid, cal = np.split(pre, [len(pre) - n_val - n_cal, len(pre) - n_cal])
    rows = RowSets(fit=train, early_stop=valid, calibration=cal, test=test)
    scores, info = fit_and_score(data, rows, settings, trials, settings.training.seed)
    when = data.as_of
    info["window"] = {name: [str(when.iloc[ix].min().date()), str(when.iloc[ix].max().date()), len(ix),
                             int(data.y[ix].sum())]
                      for name, ix in (("train", train), ("valid", valid), ("calibration", cal), ("test", test))}
    return test, scores, info


# --------------------------------------------------------------------------------------------------
# The two datasets
# --------------------------------------------------------------------------------------------------


def _need(path: Path) -> Path:
    if not path.exists():
        raise DataMissingError(f"{path} not found (set ${DATA_ENV} to the shared data directory)")
    return path


def evaluate_x_education(settings: Settings, trials: int | None = None, data_dir: Path | None = None,
                         mapping_file: Path | None = None, bag_folds: int = BAG_FOLDS) -> EvalResult:
    """Stratified 5-fold CV on X Education with the sales-entered and snapshot fields excluded.

    ``bag_folds`` fold models are averaged inside each outer fold (0 or 1: one model, as before).
    """
    from leadscore.training.flat import read_flat

    started = time.time()
    path = _need((data_dir or shared_data_dir()) / "x_education" / "Leads.csv")
    mapping = load_mapping(mapping_file or Path(str(mappings_dir() / "x_education.yaml")))
    data = prepare_flat(read_flat(path), mapping)
    leak = check_leakage(data, mapping, seed=settings.training.seed)
    n_trials = trials if trials is not None else settings.training.trials
    oof, details = cross_validate(data, settings, n_trials, bag_folds=bag_folds)
    metrics = _metrics(data.y, oof, settings)
    aucs = [f["auc"]["shipped"] for f in details["folds"]]
    notes = [
        f"stratified 5-fold CV, metrics on pooled out-of-fold predictions; shipped model's fold AUCs "
        f"{', '.join(f'{a:.3f}' for a in aucs)} (mean {np.mean(aucs):.3f} ± {np.std(aucs):.3f})",
        f"{MODEL_CHOICE_NOTE}; shipped: {shipped_models(details)}",
        f"excluded: {', '.join(sorted(c for c, why in data.excluded.items() if why.startswith('leakage')))}; "
        "'Select' treated as missing",
        f"leakage guard allowed: {leak.allowed or 'none'}",
        f"{n_trials} Optuna trials per fold; each outer training part split, stratified, into 64% fit, 16% early "
        "stopping and 20% calibration rows",
        (f"LightGBM: mean of {bag_folds} fold models over the fit + early-stopping rows, each stopped early on "
         "its own held-out part" if bag_folds >= 2 else "LightGBM: one model, stopped early on the 16%")
        + f"; calibrated ({_calibrations(details)}) on the 20% no model was fitted or stopped on",
    ]
    return EvalResult(
        dataset="x-education", protocol="stratified 5-fold CV", rows=len(data.y), positives=int(data.y.sum()),
        metrics=metrics, goal_auc=GOALS["x-education"], reference_auc=REFERENCE["x-education"], notes=notes,
        details={**details, "leakage": leak.to_dict(), "seconds": round(time.time() - started, 1),
                 "features": [s["name"] for s in data.schema]},
    )


def olist_flat_frame(data_dir: Path, horizon_days: int) -> tuple[pd.DataFrame, pd.Series, pd.Timestamp]:
    """MQLs joined to their won date: the flat table, the matured mask, and the data cut-off.

    The cut-off is the last recorded win (nothing later was observed). Label: won within
    ``horizon_days`` of first contact. An MQL whose horizon ends after the cut-off is censored.
    Only the won date is read from the closed-deals file: every other column of it is recorded
    during or after the sales process.
    """
    base = _need(data_dir / "olist_funnel")
    mql = pd.read_csv(_need(base / "olist_marketing_qualified_leads_dataset.csv"), dtype=str,
                      keep_default_na=False, na_values=[""])
    deals = pd.read_csv(_need(base / "olist_closed_deals_dataset.csv"), dtype=str, usecols=["mql_id", "won_date"])
    won_at = pd.to_datetime(mql["mql_id"].map(deals.drop_duplicates("mql_id").set_index("mql_id")["won_date"]),
                            utc=True)
    contact = pd.to_datetime(mql["first_contact_date"], utc=True)
    cutoff = pd.Timestamp(won_at.max())
    won = won_at.notna() & ((won_at - contact) <= pd.Timedelta(days=horizon_days))
    matured = (contact + pd.Timedelta(days=horizon_days)) <= cutoff
    frame = mql.assign(won=np.where(won, "1", "0"))
    return frame, matured, cutoff


def evaluate_olist(settings: Settings, trials: int | None = None, data_dir: Path | None = None,
                   mapping_file: Path | None = None) -> EvalResult:
    """Chronological evaluation on Olist MQLs (latest 20% of matured MQLs as the test set)."""
    started = time.time()
    mapping = load_mapping(mapping_file or Path(str(mappings_dir() / "olist.yaml")))
    frame, matured, cutoff = olist_flat_frame(data_dir or shared_data_dir(), mapping.horizon_days)
    # Point-in-time features are computed over all MQLs (a censored MQL still happened and is known to
    # later rows); only matured rows are then trained on and evaluated.
    full = prepare_flat(frame, mapping)
    data = _subset(full, np.flatnonzero(matured.to_numpy()))
    leak = check_leakage(data, mapping, seed=settings.training.seed)
    n_trials = trials if trials is not None else settings.training.trials
    test, scores, details = chronological(data, settings, n_trials)
    metrics = _metrics(data.y[test], scores, settings)
    w = details["window"]
    notes = [
        f"label: won within {mapping.horizon_days} days of first contact; cut-off = last recorded win "
        f"{cutoff:%Y-%m-%d}; {int((~matured).sum())} MQLs censored (horizon not elapsed)",
        f"chronological split: train {w['train'][0]}..{w['train'][1]} ({w['train'][2]} rows, {w['train'][3]} won), "
        f"early stopping {w['valid'][0]}..{w['valid'][1]} ({w['valid'][2]}, {w['valid'][3]}), "
        f"calibration {w['calibration'][0]}..{w['calibration'][1]} ({w['calibration'][2]}, {w['calibration'][3]}), "
        f"test {w['test'][0]}..{w['test'][1]} ({w['test'][2]}, {w['test'][3]})",
        "features: origin, landing page, weekday of first contact, and point-in-time counts of earlier MQLs "
        "(same landing page / origin in the previous days, landing page age); no closed-deal column",
        f"leakage guard allowed: {leak.allowed or 'none'}",
        f"{n_trials} Optuna trials; LightGBM calibration ({details['calibration']}) fitted on the calibration rows only",
        f"{MODEL_CHOICE_NOTE}; shipped: {shipped_models(details)}, recency {details['model']['recency']}; "
        f"{REFIT_NOTE}",
    ]
    return EvalResult(
        dataset="olist", protocol="chronological (latest 20% of matured MQLs)", rows=len(test),
        positives=int(data.y[test].sum()), metrics=metrics, goal_auc=GOALS["olist"],
        reference_auc=REFERENCE["olist"], notes=notes,
        details={**details, "leakage": leak.to_dict(), "seconds": round(time.time() - started, 1),
                 "matured_rows": len(data.y), "features": [s["name"] for s in data.schema]},
    )


PROTOCOLS = ("chrono", "random", "both")


def evaluate_flat(settings: Settings, flat_file: Path, mapping_file: Path, protocol: str = "both",
                  trials: int | None = None, bag_folds: int = BAG_FOLDS) -> list[EvalResult]:
    """A user's own flat table, evaluated as the shared datasets are: one result per protocol.

    ``random``: stratified 5-fold CV as on X Education (``bag_folds`` fold models per fold);
    ``chrono``: the latest 20% of rows by the mapping's time are the test set, as on Olist. Under
    drift the two disagree, and the chronological figure is the one a monthly retrain will see; a
    file without dates is ordered by ``time.order_by`` (or its row order), which the notes say.
    """
    from leadscore.training.flat import read_flat

    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, not {protocol!r}")
    mapping = load_mapping(mapping_file)
    frame = read_flat(flat_file)
    data = prepare_flat(frame, mapping)
    leak = check_leakage(data, mapping, seed=settings.training.seed)
    n_trials = trials if trials is not None else settings.training.trials
    read = frame.attrs.get("read", {"format": "parquet"})
    common = [f"file {Path(flat_file).name} read as {read}; mapping {mapping.name}",
              f"leakage guard allowed: {leak.allowed or 'none'}", *data.notes]
    results = []
    if protocol in ("random", "both"):
        started = time.time()
        oof, details = cross_validate(data, settings, n_trials, bag_folds=bag_folds)
        aucs = [f["auc"]["shipped"] for f in details["folds"]]
        results.append(EvalResult(
            dataset=mapping.name, protocol="stratified 5-fold CV", rows=len(data.y), positives=int(data.y.sum()),
            metrics=_metrics(data.y, oof, settings), report_suffix="_random",
            notes=[f"stratified 5-fold CV, metrics on pooled out-of-fold predictions; shipped model's fold AUCs "
                   f"{', '.join(f'{a:.3f}' for a in aucs)}; LightGBM calibration {_calibrations(details)}; "
                   f"{n_trials} Optuna trials per fold",
                   f"{MODEL_CHOICE_NOTE}; shipped: {shipped_models(details)}", *common],
            details={**details, "leakage": leak.to_dict(), "seconds": round(time.time() - started, 1)}))
    if protocol in ("chrono", "both"):
        started = time.time()
        test, scores, details = chronological(data, settings, n_trials)
        w = details["window"]
        results.append(EvalResult(
            dataset=mapping.name, protocol="chronological (latest 20% of rows)", rows=len(test),
            positives=int(data.y[test].sum()), metrics=_metrics(data.y[test], scores, settings),
            report_suffix="_chrono",
            notes=["chronological split " + ", ".join(f"{part} {v[0]}..{v[1]} ({v[2]} rows, {v[3]} positive)"
                                                     for part, v in w.items())
                   + ("" if data.real_time else " (ordinal periods: the file has no dates)"),
                   f"{n_trials} Optuna trials; LightGBM calibration ({details['calibration']}) on the calibration "
                   "rows only",
                   f"{MODEL_CHOICE_NOTE}; shipped: {shipped_models(details)}, recency {details['model']['recency']}; "
                   f"{REFIT_NOTE}", *common],
            details={**details, "leakage": leak.to_dict(), "seconds": round(time.time() - started, 1)}))
    return results


# --------------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------------

_LABELS = {"shipped": "shipped model (model choice; refit on all pre-test rows when in time order)",
           "lightgbm": "LightGBM candidate (calibrated)", "logistic": "logistic candidate (calibrated)",
           "rule": "points rule"}


def label(name: str) -> str:
    """How a metrics key is shown in the report tables (blend candidates by their weight)."""
    return _LABELS.get(name, f"{name} candidate (log-odds blend, weight on the trees; calibrated)")


def shipped_models(details: dict[str, Any]) -> str:
    """Which candidate was shipped, per fold or once: ``blend 0.5 in 3 fold(s), lightgbm in 2 fold(s)``."""
    chosen = [f["model"]["shipped"] for f in details.get("folds", [details])]
    if len(chosen) == 1:
        return chosen[0]
    return ", ".join(f"{m} in {chosen.count(m)} fold(s)" for m in sorted(set(chosen)))


def markdown(result: EvalResult) -> str:
    """The result as a markdown section (what the README's Results table is copied from)."""
    head = "| model | " + " | ".join(REPORTED) + " |"
    lines = [f"## {result.dataset}: {result.protocol}", "",
             f"{result.rows} rows evaluated, {result.positives} positive. 95% bootstrap CIs in brackets.", "",
             head, "|" + "---|" * (len(REPORTED) + 1)]
    for name, ms in result.metrics.items():
        cells = [f"{ms[m].value:.3f} [{ms[m].lo:.3f}, {ms[m].hi:.3f}]" for m in REPORTED]
        lines.append(f"| {label(name)} | " + " | ".join(cells) + " |")
    auc = result.metrics["shipped"]["roc_auc"].value
    if result.goal_auc is not None:
        verdict = "met" if result.goal_met else "NOT met"
        lines += ["", f"Goal: ROC AUC >= {result.goal_auc} — {verdict} ({auc:.3f}; reference gradient boosting "
                  f"{result.reference_auc}).", ""]
    else:
        lines += [""]
    lines += [f"- {n}" for n in result.notes]
    return "\n".join(lines) + "\n"


def write_report(result: EvalResult, reports_dir: Path) -> tuple[Path, Path]:
    """``<reports_dir>/evaluation_<dataset>[_<suffix>].json`` and ``.md``."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    stem = f"evaluation_{result.dataset.replace('-', '_')}{result.report_suffix}"
    js, md = reports_dir / f"{stem}.json", reports_dir / f"{stem}.md"
    js.write_text(json.dumps(result.to_dict(), indent=2, default=float))
    md.write_text(markdown(result))
    return js, md


__all__ = ["PROTOCOLS", "DataMissingError", "EvalResult", "FlatMapping", "evaluate_flat", "evaluate_olist",
           "evaluate_x_education",
           "markdown", "shared_data_dir", "write_report"]
