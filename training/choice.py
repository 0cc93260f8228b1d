"""Choices a retrain makes on held-out months: how much history and how recent (recency), and which model.

**Recency.** Lead behaviour drifts; a model that learns all history equally learns an average of old
regimes. Two knobs, both chosen on the validation months (the newest rows before them are what the
model will face next): a training *window* (all matured history, or only the last N months before the
validation months) and *time-decay sample weights* ``0.5 ** (age_in_months / half_life)``, the half-life
including ``None`` (no decay). Each combination is scored by one LightGBM fit with fixed, moderately
regularised parameters (:data:`PROBE_PARAMS`: tuning every combination would multiply the Optuna
budget), early-stopped on the validation months; the lowest validation log loss wins, but the plain
choice (all history, no decay) is kept unless another beats it by ``recency.min_gain`` (relative): a
few hundred validation rows cannot tell small differences from noise.

**Model.** Candidates: the LightGBM fit, the logistic model (:mod:`training.linear`, fitted on the same
rows with the same weights) and their blend in log-odds ``w·logit(p_trees) + (1-w)·logit(p_linear)``.
They are compared by log loss *after calibration* — each candidate calibrated as it would be shipped —
out of fold on the calibration months. Not on the validation months: LightGBM's rounds were stopped
there, so its log loss on them is biased in its favour, while the calibration months were fitted by no
candidate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from leadscore.training.calibration import (
    CALIBRATION_FOLDS,
    Calibrator,
    fit_calibrator,
    fit_weights,
    fold_splits,
    weight_product,
)
from leadscore.training.config import ModelKind, TrainingConfig
from leadscore.training.encoding import categorical_indices, encode_frame, fit_encodings
from leadscore.training.linear import blend_probability
from leadscore.training.tune import base_params, fit_lightgbm, make_dataset

DAYS_PER_MONTH = 30.4375
#: the parameters each recency combination is probed with (middle of the tuned search space)
PROBE_PARAMS = {"learning_rate": 0.1, "num_leaves": 15, "min_data_in_leaf": 100, "feature_fraction": 0.7,
                "bagging_fraction": 0.8, "lambda_l2": 3.0, "cat_smooth": 10.0}


@dataclass(frozen=True)
class Recency:
    """A training window (months before ``end``; None = all history) and a decay half-life (None = none)."""

    window_months: int | None = None
    half_life_months: float | None = None

    @property
    def label(self) -> str:
        window = "all" if self.window_months is None else f"last {self.window_months} months"
        decay = "none" if self.half_life_months is None else f"half-life {self.half_life_months:g} months"
        return f"window {window}, decay {decay}"

    def rows(self, rows: np.ndarray, as_of: pd.Series, end: pd.Timestamp) -> np.ndarray:
        """The positions among ``rows`` inside the window that ends at ``end``."""
        if self.window_months is None:
            return rows
        start = pd.Timestamp(end) - pd.DateOffset(months=self.window_months)
        return rows[np.asarray(as_of.iloc[rows] >= start)]

    def weights(self, as_of: pd.Series, end: pd.Timestamp) -> np.ndarray | None:
        """Time-decay weights of the rows of ``as_of`` (1 at ``end``), or None without decay."""
        if self.half_life_months is None:
            return None
        age = (pd.Timestamp(end) - as_of).dt.total_seconds().to_numpy() / 86400.0 / DAYS_PER_MONTH
        return np.asarray(0.5 ** (np.clip(age, 0.0, None) / self.half_life_months), dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {"window_months": self.window_months, "half_life_months": self.half_life_months}


@dataclass(frozen=True)
class RecencyChoice:
    chosen: Recency
    #: validation log loss of every combination probed, by label
    validation_log_loss: dict[str, float] = field(default_factory=dict)


def _probe_order(cfg: TrainingConfig) -> tuple[list[float | None], list[int | None]]:
    rc = cfg.recency
    return list(dict.fromkeys([None, *rc.half_lives_months])), list(dict.fromkeys([None, *rc.windows_months]))


def choose_recency(
    frame: pd.DataFrame, y: np.ndarray, fit_rows: np.ndarray, val_rows: np.ndarray, as_of: pd.Series,
    end: pd.Timestamp, schema: Sequence[Mapping[str, Any]], cfg: TrainingConfig, *, seed: int,
) -> RecencyChoice:
    """Probe the (window, half-life) combinations of ``cfg.recency`` on the validation rows (module docstring).

    Coordinate search, not the full grid: every half-life on all history, then every window with the
    best half-life so far (4 + 2 probes instead of 12 with the default lists; on generated and real CRMs
    the two knobs act on the same thing, the weight of old months, so the grid's other corners were never
    the winner). The probes boost on a time-stratified sample of at most ``tune_sample_rows`` rows (the
    sample Optuna tunes on), binned once: each probe is a subset of that one LightGBM dataset.
    """
    rc = cfg.recency
    plain = Recency()
    half_lives, windows = _probe_order(cfg)
    if half_lives == [None] and windows == [None]:
        return RecencyChoice(plain)
    from leadscore.training.split import stratified_time_sample

    sample = fit_rows[stratified_time_sample(as_of.iloc[fit_rows], cfg.tune_sample_rows, seed)]
    cat = categorical_indices(schema)
    enc = fit_encodings(frame.iloc[sample], schema)
    params = {**base_params(cfg, seed, rows=len(sample)), **PROBE_PARAMS}
    full = make_dataset(encode_frame(frame.iloc[sample], schema, enc), y[sample], cat,
                        params={"max_bin": cfg.lightgbm.max_bin}).construct()
    # with moment weights in the fit, the probes fit and are scored at the level the models will learn:
    # the sampled months' label rates hide a level shift that the weighted ones show (training.calibration)
    moment = fit_weights(frame.iloc[sample], None, cfg)
    # one validation set for every probe: subsets share ``full``'s bins, so LightGBM keeps it as it is
    valid_set = make_dataset(encode_frame(frame.iloc[val_rows], schema, enc), y[val_rows], cat,
                             params={"max_bin": cfg.lightgbm.max_bin}, reference=full,
                             weight=fit_weights(frame.iloc[val_rows], None, cfg)).construct()
    losses: dict[Recency, float] = {}
    kept: dict[int, int | None] = {}  # rows kept -> the first window that kept them

    def probe(combo: Recency) -> None:
        if combo in losses:
            return
        rows = combo.rows(np.arange(len(sample)), as_of.iloc[sample].reset_index(drop=True), end)
        # a window that keeps every row is "all history"; one with too few positives is not a choice
        if (len(rows) == len(sample) and combo.window_months is not None) or \
                kept.setdefault(len(rows), combo.window_months) != combo.window_months:
            return
        if y[sample][rows].sum() < cfg.minimums.min_positives or len(np.unique(y[sample][rows])) < 2:
            return
        w = combo.weights(as_of.iloc[sample[rows]], end)
        w = weight_product(w, None if moment is None else moment[rows])
        train_set = full
        if len(rows) < len(sample) or w is not None:
            # a subset shares the bins of the one dataset; weights apply to a constructed one only
            train_set = full.subset(rows).construct()
            train_set.set_weight(w)
        booster = fit_lightgbm(train_set, valid_set, params, cfg)
        losses[combo] = float(booster.best_score["validation"]["binary_logloss"])

    for h in half_lives:
        probe(Recency(None, h))
    best_h = min((c for c in losses), key=lambda c: losses[c]).half_life_months if losses else None
    for w in windows:
        probe(Recency(w, best_h))
    # the configured lists decide what may be chosen; the plain choice is always the reference
    allowed = {c for c in losses if c.half_life_months in rc.half_lives_months and c.window_months in rc.windows_months}
    best = min(allowed | ({plain} & set(losses)), key=lambda c: losses[c]) if losses else plain
    chosen = best if losses.get(best, np.inf) < losses.get(plain, np.inf) * (1.0 - rc.min_gain) else plain
    return RecencyChoice(chosen, {c.label: v for c, v in losses.items()})


@dataclass(frozen=True)
class ModelChoice:
    """The shipped kind (``lightgbm``, ``logistic``, ``blend``), its blend weight and its calibration."""

    kind: ModelKind
    blend_weight: float | None
    calibrator: Calibrator
    #: out-of-fold calibrated log loss of every candidate on the calibration rows
    log_loss: dict[str, float]
    #: the chosen candidate's per-method calibration log losses (what :func:`fit_calibrator` reports)
    calibration_log_loss: dict[str, float]
    #: every candidate's chosen calibration method, by candidate name
    methods: dict[str, str] = field(default_factory=dict)


def candidate_name(kind: str, weight: float | None) -> str:
    return kind if kind != "blend" else f"blend {weight:g}"


def candidate_options(cfg: TrainingConfig) -> list[tuple[ModelKind, float | None]]:
    """The (kind, blend weight) candidates of ``cfg.model_choice``, in order."""
    options: list[tuple[ModelKind, float | None]] = []
    for kind in cfg.model_choice.candidates:
        options += [(kind, w) for w in cfg.model_choice.blend_weights] if kind == "blend" else [(kind, None)]
    return options


def candidate_raw(kind: str, weight: float | None, p_trees: np.ndarray | None, p_linear: np.ndarray | None
                  ) -> np.ndarray:
    """A candidate's raw probability from the two models' raw probabilities."""
    if kind == "lightgbm":
        assert p_trees is not None
        return p_trees
    if kind == "logistic":
        assert p_linear is not None
        return p_linear
    assert p_trees is not None and p_linear is not None and weight is not None
    return blend_probability(p_trees, p_linear, weight)


def choose_model(
    p_trees: np.ndarray, p_linear: np.ndarray | None, y: np.ndarray, cfg: TrainingConfig, *, seed: int,
    groups: np.ndarray | None = None, weights: np.ndarray | None = None,
) -> ModelChoice:
    """The candidate of ``cfg.model_choice`` with the lowest calibrated out-of-fold log loss on the
    calibration rows (``p_*``: the raw scores of those rows; ``groups``: their lead ids, which keep a
    lead in one fold, see :func:`training.calibration.fit_calibrator`; ``weights``: the rows' weights in the
    maps and the losses, as the shipped map weighs them). Ties go to the earlier candidate."""
    options = candidate_options(cfg)
    fitted = {}
    splits = fold_splits(y, CALIBRATION_FOLDS, seed, groups)  # the same folds for every candidate and method
    for kind, w in options:
        calibrator, scores = fit_calibrator(candidate_raw(kind, w, p_trees, p_linear), y, cfg.min_isotonic_rows,
                                            seed=seed, groups=groups, splits=splits, weights=weights)
        fitted[(kind, w)] = (calibrator, scores, scores[calibrator.method])
    best = min(options, key=lambda o: float(np.nan_to_num(fitted[o][2], nan=np.inf)))
    calibrator, scores, _ = fitted[best]
    return ModelChoice(best[0], best[1], calibrator, {candidate_name(*o): fitted[o][2] for o in options}, scores,
                       {candidate_name(*o): fitted[o][0].method for o in options})


__all__ = ["PROBE_PARAMS", "ModelChoice", "Recency", "RecencyChoice", "candidate_name", "candidate_options",
           "candidate_raw", "choose_model",
           "choose_recency"]
