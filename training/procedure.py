"""One retrain's choices on rows in roles, shared by ``leadscore train`` and ``leadscore evaluate``.

``train`` plays the roles with months (:mod:`training.backtest`), ``evaluate`` with parts of a
chronological split or of a cross-validation fold (:mod:`training.evaluate`); both run this one
procedure so the model ``evaluate`` reports is the model ``train`` would ship:

1. recency (window, decay half-life) chosen on the validation rows (:func:`training.choice.choose_recency`),
   when the rows have a time order (not in cross-validation, where folds mix periods);
2. LightGBM through :func:`training.fit.fit_target` (Optuna and early stopping on the validation rows,
   calibration on the calibration rows);
3. the logistic model on the rows the trees learnt from, with the same weights;
4. the model kind (LightGBM, logistic, blend) chosen by calibrated out-of-fold log loss on the
   calibration rows (:func:`training.choice.choose_model`).

:func:`candidate_scores` scores every candidate (each calibrated by its own chosen method on the
calibration rows) on the test rows, from the backtest's models or from a refit's
(:mod:`training.refit`): the shipped one and the ones it was preferred to, on the same rows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from leadscore.training.calibration import fit_weights, map_weights
from leadscore.training.choice import (
    ModelChoice,
    Recency,
    RecencyChoice,
    candidate_name,
    candidate_options,
    candidate_raw,
    choose_model,
    choose_recency,
)
from leadscore.training.config import TrainingConfig
from leadscore.training.fit import FitResult, RowSets, fit_target
from leadscore.training.linear import LinearModel, fit_linear
from leadscore.training.refit import RefitRows, calibrate_as, refit_choice, refit_models, refit_recency
from leadscore.training.split import stratified_time_sample


@dataclass(frozen=True)
class Roles:
    """Positions of the rows per role (pairwise disjoint); ``recency_end`` = where the validation rows
    start (windows and decay are counted back from it), None for rows without a time order."""

    train: np.ndarray
    validation: np.ndarray
    calibration: np.ndarray
    test: np.ndarray
    recency_end: pd.Timestamp | None = None


@dataclass(frozen=True)
class Chosen:
    """What the procedure chose and fitted on the backtest's rows."""

    recency: RecencyChoice
    fit: FitResult
    linear: LinearModel | None
    choice: ModelChoice
    #: positions the models learnt from (the train rows inside the window; with bagging plus validation)
    fit_rows: np.ndarray
    #: the recency weights of ``fit_rows`` (None: no decay)
    fit_weights: np.ndarray | None
    #: the logistic model's raw probabilities on the calibration and test rows (None: not a candidate)
    linear_raw: dict[str, np.ndarray | None]

    def raw(self, part: str, kind: str, weight: float | None) -> np.ndarray:
        """A candidate's raw probability on the ``calibration`` or ``test`` rows."""
        return candidate_raw(kind, weight, self.fit.raw[part], self.linear_raw[part])

    def shipped_scores(self) -> np.ndarray:
        """The chosen candidate, calibrated as chosen, on the test rows (the backtest's shipped score)."""
        return np.asarray(self.choice.calibrator(self.raw("test", self.choice.kind, self.choice.blend_weight)))


def choose_and_fit(
    frame: pd.DataFrame, y: np.ndarray, roles: Roles, schema: Sequence[Mapping[str, Any]], cfg: TrainingConfig, *,
    trials: int, timeout: float | None = None, seed: int | None = None, bag_folds: int = 1,
    on_trial: Callable[[dict[str, Any]], None] | None = None, progress: Callable[[str], None] | None = None,
) -> Chosen:
    """Steps 1-4 of the module docstring on ``roles`` (``frame`` holds ``as_of`` when recency applies)."""
    seed = cfg.seed if seed is None else seed
    say = progress or (lambda _text: None)
    y = np.asarray(y, dtype=np.float64)
    if roles.recency_end is not None:
        say("recency (window, decay) on the validation months")
        as_of = frame["as_of"]
        recency = choose_recency(frame, y, roles.train, roles.validation, as_of, roles.recency_end, schema, cfg,
                                 seed=seed)
        fit_rows = recency.chosen.rows(roles.train, as_of, roles.recency_end)
        w_fit = recency.chosen.weights(as_of.iloc[fit_rows], roles.recency_end)
    else:
        recency, fit_rows, w_fit = RecencyChoice(Recency()), roles.train, None
    w_fit = fit_weights(frame.iloc[fit_rows], w_fit, cfg)
    weights = None
    if w_fit is not None:
        weights = np.zeros(len(frame))
        weights[fit_rows] = w_fit
    tune = None
    if "as_of" in frame.columns and roles.recency_end is not None:
        tune = fit_rows[stratified_time_sample(frame["as_of"].iloc[fit_rows], cfg.tune_sample_rows, seed)]
    rows = RowSets(fit=fit_rows, early_stop=roles.validation, calibration=roles.calibration, test=roles.test,
                   tune=tune)
    fit = fit_target(frame, y, rows, schema, cfg, trials=trials, timeout=timeout, seed=seed, bag_folds=bag_folds,
                     on_trial=on_trial, weights=weights, progress=say)

    say("model choice on the calibration months")
    # the logistic model learns from the rows the trees learnt from (with bagging: fit and validation)
    learn = fit_rows if bag_folds < 2 else np.sort(np.concatenate([fit_rows, roles.validation]))
    w_learn = None if weights is None else weights[learn]
    linear = None
    linear_raw: dict[str, np.ndarray | None] = {"calibration": None, "test": None}
    if set(cfg.model_choice.candidates) - {"lightgbm"}:
        linear = fit_linear(frame.iloc[learn], y[learn], schema, weights=w_learn, seed=seed)
        linear_raw = {p: linear.predict(frame.iloc[getattr(roles, p)]) for p in ("calibration", "test")}
    leads = frame["lead_id"].iloc[roles.calibration].astype(str).to_numpy() if "lead_id" in frame.columns else None
    choice = choose_model(fit.raw["calibration"], linear_raw["calibration"], y[roles.calibration], cfg, seed=seed,
                          groups=leads, weights=map_weights(frame.iloc[roles.calibration], cfg))
    return Chosen(recency, fit, linear, choice, learn, w_learn, linear_raw)


def candidate_scores(
    raw: Callable[[str, str, float | None], np.ndarray], y_cal: np.ndarray, choice: ModelChoice, cfg: TrainingConfig,
    w_cal: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Every candidate's calibrated test scores plus ``shipped`` (the chosen one), by candidate name.

    ``raw(part, kind, weight)`` gives a candidate's raw probability on the ``calibration`` or ``test``
    rows (the backtest's :meth:`Chosen.raw`, or a refit's); each candidate is calibrated on the
    calibration rows (weighted by ``w_cal``) by the method model choice picked for it.
    """
    out: dict[str, np.ndarray] = {}
    for kind, weight in candidate_options(cfg):
        name = candidate_name(kind, weight)
        calibrator = calibrate_as(choice.methods.get(name, choice.calibrator.method), raw("calibration", kind, weight),
                                  y_cal, w_cal)
        out[name] = np.asarray(calibrator(raw("test", kind, weight)))
    out["shipped"] = out[candidate_name(choice.kind, choice.blend_weight)]
    return out


def refit_scores(
    frame: pd.DataFrame, y: np.ndarray, roles: Roles, schema: Sequence[Mapping[str, Any]], cfg: TrainingConfig,
    chosen: Chosen,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The production refit before the test rows, and every candidate's calibrated test scores.

    As ``train`` registers its model (:mod:`training.refit`, scheme ``training.refit``; ``none`` measures
    ``last_months``): the candidates are refit with the chosen rounds, window and decay on the train and
    validation rows (inside the window counted back from the calibration rows' start) and, with
    ``cross_fit``, on the calibration rows too, every fitting row then calibrating on its out-of-fold
    score (weighted as the fit); with ``last_months`` the calibration rows are never fitted and calibrate
    alone. The kind is chosen again on the map's rows (``model_choice.at_refit``, :func:`training.refit.refit_choice`),
    so ``shipped`` is what ``train`` registers. Then scored on the test rows. ``frame`` holds ``as_of``.
    Returns the scores (:func:`candidate_scores`) and a record (``model``: the shipped candidate).
    """
    as_of = frame["as_of"]
    pool = np.sort(np.concatenate([roles.train, roles.validation]))
    cal_start = pd.Timestamp(as_of.iloc[roles.calibration].min())
    recency = refit_recency(frame, np.asarray(y, dtype=np.float64), pool, roles.calibration, cal_start, schema, cfg,
                            chosen.recency.chosen)
    rows = RefitRows.of(recency.rows(pool, as_of, cal_start), roles.calibration, as_of, cal_start,
                        pd.Timestamp(as_of.iloc[roles.calibration].max()),
                        "last_months" if cfg.refit == "none" else cfg.refit)
    # every candidate is refit: all are scored on the test rows
    models = refit_models(frame, y, rows, schema, cfg, recency, chosen.fit, linear=chosen.linear is not None)
    choice = refit_choice(models, frame, y, rows, cfg, chosen.choice, recency)

    def raw(part: str, kind: str, w: float | None) -> np.ndarray:
        if part == "calibration":
            return models.calibration_raw(frame.iloc[rows.calibration], kind, w)
        return models.raw(frame.iloc[roles.test], kind, w)

    scores = candidate_scores(raw, np.asarray(y, dtype=np.float64)[rows.calibration], choice, cfg,
                              rows.calibration_weights(frame, recency, cfg))
    return scores, {"fit_rows": len(rows.fit), "calibration_rows": len(rows.calibration), "scheme": rows.scheme,
                    "rounds": chosen.fit.rounds[0], "fit_start": str(rows.fit_start), "recency": recency.label,
                    "model": candidate_name(choice.kind, choice.blend_weight), "choice_log_loss": choice.log_loss}


__all__ = ["Chosen", "Roles", "candidate_scores", "choose_and_fit", "refit_scores"]
