"""The one training procedure for one label: tune → early stopping → final fit → calibration.

Every calibrated LightGBM probability leadscore produces comes from :func:`fit_target`: the monthly
event-log retrain (once per target), the flat-table retrain (its one label) and the evaluation on
public datasets (once per outer fold). Only the caller knows which rows may play which role, so the
roles are explicit (:class:`RowSets`, positions into one frame) and the procedure does no month
arithmetic: the retrain passes month ranges, the evaluation passes parts of a fold, and a production
refit on all matured months can pass its own.

The roles, pairwise disjoint:

* ``fit``: the rows the final booster(s) learn from (``tune``, optionally, is the subset of them the
  Optuna search boosts on: a time-stratified sample keeps a large window's search fast);
* ``early_stop``: the rows that score every Optuna trial and pick the final number of rounds;
* ``calibration``: the rows the probability map is fitted on, its method chosen by cross-validation
  on them alone. Scores on rows a model was fitted or stopped on are optimistic (the rounds were
  picked to do well there), and a map fitted on them makes the scores of new rows overconfident;
  in a time split these rows are also later than both, so the map follows the drift;
* ``test`` (optional): scored with the finished model, never used to fit anything.

The final fit boosts at the tuned learning rate times ``lightgbm.final_learning_rate_factor`` (tuning
needs fast trials; the one final fit can afford smaller steps) and stops early on ``early_stop``.
With ``bag_folds >= 2`` the final fit is instead ``bag_folds`` fold models over ``fit ∪ early_stop``,
each stopped early on its own held-out fold, whose raw scores are averaged; the calibration rows stay
out of all of them. Random folds mix months, so bagging is only for exchangeable rows (cross-validation).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from leadscore.training.calibration import Calibrator, fit_calibrator, map_weights
from leadscore.training.config import TrainingConfig
from leadscore.training.encoding import categorical_indices, encode_frame, fit_encodings
from leadscore.training.threads import lightgbm_threads
from leadscore.training.tune import TuneResult, fit_lightgbm, make_dataset, tune_lightgbm

ROLES = ("fit", "early_stop", "calibration", "test")


def _positions(name: str, rows: Any) -> np.ndarray:
    idx = np.asarray(rows)
    if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
        raise ValueError(f"rows for {name!r} must be a 1-d array of integer positions")
    if len(np.unique(idx)) != len(idx):
        raise ValueError(f"rows for {name!r} repeat a position")
    return idx.astype(np.int64)


@dataclass(frozen=True)
class RowSets:
    """Which rows (positions into the frame given to :func:`fit_target`) play which role.

    Construction refuses overlapping roles, an empty fitting, stopping or calibration role, and
    ``tune`` rows outside ``fit``: the disjointness the procedure promises is checked, not assumed.
    """

    fit: np.ndarray
    early_stop: np.ndarray
    calibration: np.ndarray
    test: np.ndarray | None = None
    #: the subset of ``fit`` the Optuna search boosts on (default: all of ``fit``)
    tune: np.ndarray | None = None

    def __post_init__(self) -> None:
        for role in (*ROLES, "tune"):
            value = getattr(self, role)
            if value is not None:
                object.__setattr__(self, role, _positions(role, value))
        for role in ("fit", "early_stop", "calibration"):
            if len(getattr(self, role)) == 0:
                raise ValueError(f"no rows for the {role!r} role")
        present = [r for r in ROLES if getattr(self, r) is not None]
        for i, a in enumerate(present):
            for b in present[i + 1:]:
                shared = np.intersect1d(getattr(self, a), getattr(self, b))
                if len(shared):
                    raise ValueError(f"{len(shared)} row(s) are both {a!r} and {b!r} rows (e.g. position {shared[0]})")
        if self.tune is not None and len(np.setdiff1d(self.tune, self.fit)):
            raise ValueError("'tune' rows must be a subset of the 'fit' rows")

    def get(self, role: str) -> np.ndarray | None:
        return getattr(self, role)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class FitResult:
    """What :func:`fit_target` learned and measured for one label."""

    rows: RowSets
    encodings: dict[str, list[str]]
    #: one booster, or the ``bag_folds`` fold models whose raw scores are averaged
    boosters: list[Any]
    #: best round of each booster (what its model string keeps)
    rounds: list[int]
    #: the parameters of the final fit (tuned ones, learning rate scaled, threads set)
    params: dict[str, Any]
    tune: TuneResult
    calibrator: Calibrator
    #: out-of-fold log loss of each calibration candidate on the calibration rows (``identity`` = raw)
    calibration_log_loss: dict[str, float]
    #: the final fit's log loss on its early-stopping rows (mean over fold models)
    early_stop_log_loss: float
    #: summed gain per feature over the boosters, indexed by feature name
    importance: pd.Series
    #: raw (uncalibrated) scores of the ``calibration`` and, if given, ``test`` rows
    raw: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def bagged(self) -> bool:
        return len(self.boosters) > 1

    def predict_raw(self, X: np.ndarray) -> np.ndarray:
        """The mean raw probability of the booster(s) on an encoded matrix."""
        return _mean_raw(self.boosters, X)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Calibrated probability on an encoded matrix."""
        return np.asarray(self.calibrator(self.predict_raw(X)))

    def scores(self, role: str = "test") -> np.ndarray:
        """Calibrated scores of the ``calibration`` or ``test`` rows."""
        return np.asarray(self.calibrator(self.raw[role]))

    def model_string(self) -> str:
        """The single booster in LightGBM's text format, cut at its best round (what a bundle stores)."""
        if self.bagged:
            raise ValueError("a bagged fit has several boosters; a scoring bundle holds one model per target")
        booster = self.boosters[0]
        return str(booster.model_to_string(num_iteration=booster.best_iteration))

    def summary(self) -> dict[str, Any]:
        """A JSON-able record of the fit (parameters, rounds, tuning and calibration figures)."""
        return {
            "best_params": {k: v for k, v in self.params.items() if k not in ("objective", "metric", "verbosity")},
            "rounds": self.rounds, "trials": self.tune.n_trials, "pruned": self.tune.n_pruned,
            "tune_best_log_loss": self.tune.best_value, "early_stop_log_loss": self.early_stop_log_loss,
            "calibration": self.calibrator.method, "calibration_log_loss": self.calibration_log_loss,
            "bag_folds": len(self.boosters), "rows": {r: len(v) for r in ROLES if (v := self.rows.get(r)) is not None},
        }


def _mean_raw(boosters: list[Any], X: np.ndarray) -> np.ndarray:
    return np.asarray(np.mean([b.predict(X, num_iteration=b.best_iteration) for b in boosters], axis=0))


def _bag_splits(y: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedKFold

    return list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))


def fit_target(
    frame: pd.DataFrame,
    y: np.ndarray,
    rows: RowSets,
    schema: Sequence[Mapping[str, Any]],
    cfg: TrainingConfig,
    *,
    trials: int,
    timeout: float | None = None,
    seed: int | None = None,
    bag_folds: int = 1,
    weights: np.ndarray | None = None,
    encodings: dict[str, list[str]] | None = None,
    on_trial: Callable[[dict[str, Any]], None] | None = None,
    progress: Callable[[str], None] | None = None,
) -> FitResult:
    """Tune, early-stop, fit and calibrate one label (see the module docstring for the row roles).

    ``frame`` holds the schema's feature columns and ``y`` the 0/1 label, both addressed by position;
    only the rows named in ``rows`` are read. ``encodings`` (category codes) default to those of the
    rows the boosters learn from. ``weights`` (one per frame row, by position; e.g. the recency decay of
    :mod:`training.choice`) weigh the rows the boosters learn from, in tuning and in the final fit;
    early-stopping rows stay unweighted, calibration rows carry only their sampling weights
    (:func:`training.calibration.map_weights`). ``on_trial`` receives each Optuna trial's record; ``progress`` a
    short phase text.
    """
    seed = cfg.seed if seed is None else seed
    y = np.asarray(y, dtype=np.float64)
    say = progress or (lambda _text: None)
    learn = rows.fit if bag_folds < 2 else np.concatenate([rows.fit, rows.early_stop])
    if encodings is None:
        encodings = fit_encodings(frame.iloc[learn], schema)
    cat = categorical_indices(schema)

    def X(idx: np.ndarray) -> np.ndarray:
        return encode_frame(frame.iloc[idx], schema, encodings)

    w = None if weights is None else np.asarray(weights, dtype=np.float64)
    X_fit, X_stop = X(rows.fit), X(rows.early_stop)
    y_fit, y_stop = y[rows.fit], y[rows.early_stop]
    w_fit = None if w is None else w[rows.fit]
    say(f"tuning ({trials} trials)")
    if rows.tune is None or len(rows.tune) == len(rows.fit):
        X_tune, y_tune, w_tune = X_fit, y_fit, w_fit
    else:
        X_tune, y_tune, w_tune = X(rows.tune), y[rows.tune], None if w is None else w[rows.tune]
    tune = tune_lightgbm(X_tune, y_tune, X_stop, y_stop, cat, cfg, trials=trials, timeout=timeout, seed=seed,
                         on_trial=on_trial, weights=w_tune)
    del X_tune

    n_learn = len(learn)
    params = {**tune.params, "num_threads": lightgbm_threads(cfg.lightgbm, n_learn),
              "learning_rate": tune.params["learning_rate"] * cfg.lightgbm.final_learning_rate_factor}
    dataset_params = {"max_bin": cfg.lightgbm.max_bin}
    if bag_folds < 2:
        say(f"final fit on {len(y_fit):,} rows")
        fit_set = make_dataset(X_fit, y_fit, cat, params=dataset_params, weight=w_fit)
        boosters = [fit_lightgbm(fit_set, make_dataset(X_stop, y_stop, cat, reference=fit_set), params, cfg)]
    else:
        say(f"final fit: {bag_folds} fold models on {n_learn:,} rows")
        X_all, y_all = np.vstack([X_fit, X_stop]), np.concatenate([y_fit, y_stop])
        w_all = None if w is None else w[learn]
        boosters = []
        for own, held in _bag_splits(y_all, bag_folds, seed):
            fit_set = make_dataset(X_all[own], y_all[own], cat, params=dataset_params,
                                   weight=None if w_all is None else w_all[own])
            stop_set = make_dataset(X_all[held], y_all[held], cat, reference=fit_set)
            boosters.append(fit_lightgbm(fit_set, stop_set, params, cfg))
        del X_all
    del X_fit, X_stop

    say("calibration")
    names = [s["name"] for s in schema]
    importance = pd.Series(np.sum([b.feature_importance("gain", iteration=b.best_iteration) for b in boosters],
                                  axis=0), index=names, dtype=np.float64)
    raw = {"calibration": _mean_raw(boosters, X(rows.calibration))}
    if rows.test is not None:
        raw["test"] = _mean_raw(boosters, X(rows.test))
    # only the calibration rows' scores and labels reach the calibrator (see the module docstring)
    leads = frame["lead_id"].iloc[rows.calibration].astype(str).to_numpy() if "lead_id" in frame.columns else None
    calibrator, cal_scores = fit_calibrator(raw["calibration"], y[rows.calibration], cfg.min_isotonic_rows,
                                            seed=seed, groups=leads,
                                            weights=map_weights(frame.iloc[rows.calibration], cfg))
    return FitResult(
        rows=rows, encodings=encodings, boosters=boosters, rounds=[int(b.best_iteration) for b in boosters],
        params=params, tune=tune, calibrator=calibrator, calibration_log_loss=cal_scores,
        early_stop_log_loss=float(np.mean([b.best_score["validation"]["binary_logloss"] for b in boosters])),
        importance=importance, raw=raw,
    )


__all__ = ["ROLES", "FitResult", "RowSets", "fit_target"]
