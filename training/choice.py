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

from leadscore.training.calibration import Calibrator, fit_calibrator
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


def choose_recency(
    frame: pd.DataFrame, y: np.ndarray, fit_rows: np.ndarray, val_rows: np.ndarray, as_of: pd.Series,
    end: pd.Timestamp, schema: Sequence[Mapping[str, Any]], cfg: TrainingConfig, *, seed: int,
) -> RecencyChoice:
    """Probe every (window, half-life) of ``cfg.recency`` on the validation rows (module docstring)."""
    rc = cfg.recency
    plain = Recency()
    combos = [Recency(w, h) for w in rc.windows_months for h in rc.half_lives_months]
    if len(combos) == 1 and combos[0] == plain:
        return RecencyChoice(plain)
    cat = categorical_indices(schema)
    enc = fit_encodings(frame.iloc[fit_rows], schema)
    X_val = encode_frame(frame.iloc[val_rows], schema, enc)
    params = {**base_params(cfg, seed, rows=len(fit_rows)), **PROBE_PARAMS}
    losses: dict[Recency, float] = {}
    seen_windows: dict[int, int | None] = {}
    for combo in [plain, *[c for c in combos if c != plain]]:
        rows = combo.rows(fit_rows, as_of, end)
        # a window that keeps every row is "all history"; one with too few positives is not a choice
        if len(rows) == len(fit_rows) and combo.window_months is not None:
            continue
        if y[rows].sum() < cfg.minimums.min_positives or len(np.unique(y[rows])) < 2:
            continue
        seen_windows.setdefault(len(rows), combo.window_months)
        if seen_windows[len(rows)] != combo.window_months:
            continue  # two windows that keep the same rows
        w = combo.weights(as_of.iloc[rows], end)
        train_set = make_dataset(encode_frame(frame.iloc[rows], schema, enc), y[rows], cat,
                                 params={"max_bin": cfg.lightgbm.max_bin}, weight=w)
        valid_set = make_dataset(X_val, y[val_rows], cat, reference=train_set)
        booster = fit_lightgbm(train_set, valid_set, params, cfg)
        losses[combo] = float(booster.best_score["validation"]["binary_logloss"])
    best = min(losses, key=lambda c: losses[c])
    chosen = best if losses[best] < losses.get(plain, np.inf) * (1.0 - rc.min_gain) else plain
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


def candidate_name(kind: str, weight: float | None) -> str:
    return kind if kind != "blend" else f"blend {weight:g}"


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
    p_trees: np.ndarray, p_linear: np.ndarray | None, y: np.ndarray, cfg: TrainingConfig, *, seed: int
) -> ModelChoice:
    """The candidate of ``cfg.model_choice`` with the lowest calibrated out-of-fold log loss on the
    calibration rows (``p_*``: the raw scores of those rows). Ties go to the earlier candidate."""
    mc = cfg.model_choice
    options: list[tuple[ModelKind, float | None]] = []
    for kind in mc.candidates:
        options += [(kind, w) for w in mc.blend_weights] if kind == "blend" else [(kind, None)]
    fitted = {}
    for kind, w in options:
        calibrator, scores = fit_calibrator(candidate_raw(kind, w, p_trees, p_linear), y, cfg.min_isotonic_rows,
                                            seed=seed)
        fitted[(kind, w)] = (calibrator, scores, scores[calibrator.method])
    best = min(options, key=lambda o: float(np.nan_to_num(fitted[o][2], nan=np.inf)))
    calibrator, scores, _ = fitted[best]
    return ModelChoice(best[0], best[1], calibrator, {candidate_name(*o): fitted[o][2] for o in options}, scores)


__all__ = ["PROBE_PARAMS", "ModelChoice", "Recency", "RecencyChoice", "candidate_raw", "choose_model",
           "choose_recency"]
