"""Probability calibration fitted on a later, disjoint period and shipped as interpolation arrays.

The boosted model is tuned on older months; lead behaviour drifts, so its raw probabilities are
re-mapped on the calibration months. Both Platt (sigmoid) and isotonic mappings are reduced to a
monotone piecewise-linear curve ``(x, y)`` so that applying one is ``np.interp`` — microseconds in
the serving path, no scikit-learn object to unpickle, and exactly the same in training and serving.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from leadscore.training.config import TrainingConfig

Method = Literal["sigmoid", "isotonic", "identity"]
_CLIP = 1e-6
#: values from which :meth:`Calibrator.__call__` interpolates them in sorted order
_SORT_FROM = 256


@dataclass(frozen=True)
class Calibrator:
    """A monotone map from raw to calibrated probability, ``np.interp(p, x, y)``."""

    method: Method
    x: np.ndarray
    y: np.ndarray

    def __call__(self, p: np.ndarray | float) -> np.ndarray:
        """``np.interp(p, x, y)``. A long array (batch scoring's chunk) is interpolated in sorted order: numpy
        then finds each value's knot from the last one's instead of bisecting ~1,400 knots with a branch
        that mispredicts at every step (a chunk of 3,867: ~110 us with the sort against ~340). Each value
        still gets the same knot (sorted knots: the last one at or below it) and the same arithmetic, so the
        same bits."""
        if isinstance(p, np.ndarray) and p.ndim == 1 and p.size >= _SORT_FROM and self._sorted:
            order = np.argsort(p)
            out = np.empty(p.shape, dtype=np.float64)
            out[order] = np.interp(p[order], self.x, self.y)
            return out
        return np.interp(p, self.x, self.y)

    @cached_property
    def _sorted(self) -> bool:
        """Whether the knots are sorted (as fitted; a hand-made table may not be): only then is each value's
        knot the same whatever the order of the values."""
        x = np.asarray(self.x, dtype=np.float64)
        return bool(np.all(x[1:] >= x[:-1]))

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "x": self.x.tolist(), "y": self.y.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibrator:
        return cls(d["method"], np.asarray(d["x"], dtype=np.float64), np.asarray(d["y"], dtype=np.float64))

    @classmethod
    def identity(cls) -> Calibrator:
        return cls("identity", np.array([0.0, 1.0]), np.array([0.0, 1.0]))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _CLIP, 1 - _CLIP)
    return np.log(p / (1 - p))


def _log_loss(y: np.ndarray, p: np.ndarray, weights: np.ndarray | None = None) -> float:
    p = np.clip(p, _CLIP, 1 - _CLIP)
    return float(-np.average(y * np.log(p) + (1 - y) * np.log1p(-p), weights=weights))


def fit_sigmoid(p: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> Calibrator:
    """Platt scaling on the logit of the raw probability (rows weighted by ``weights``), tabulated on a
    logit-spaced grid."""
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(C=1e6, max_iter=1000)
    lr.fit(_logit(p).reshape(-1, 1), y.astype(int), sample_weight=weights)
    a, b = float(lr.coef_[0, 0]), float(lr.intercept_[0])
    grid = 1.0 / (1.0 + np.exp(-np.linspace(-14.0, 14.0, 1401)))
    x = np.concatenate([[0.0], grid, [1.0]])
    yy = 1.0 / (1.0 + np.exp(-(a * _logit(x) + b)))
    return Calibrator("sigmoid", x, np.clip(yy, _CLIP, 1 - _CLIP))


def fit_isotonic(p: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> Calibrator:
    """Isotonic regression (rows weighted by ``weights``); its prediction already is linear interpolation
    between thresholds."""
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(out_of_bounds="clip", y_min=_CLIP, y_max=1 - _CLIP)
    iso.fit(p, y, sample_weight=weights)
    x = np.asarray(iso.X_thresholds_, dtype=np.float64)
    yy = np.asarray(iso.y_thresholds_, dtype=np.float64)
    return Calibrator("isotonic", x, yy)


def weight_product(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    """The product of two optional row weights (None: every row weighs 1), as one optional weight."""
    return b if a is None else a if b is None else a * b


def map_weights(frame: pd.DataFrame, cfg: TrainingConfig) -> np.ndarray | None:
    """The sampling weights a calibration map weighs ``frame``'s rows by (``training.moment_weights``:
    :func:`features.moments.moment_weights`), or None. Every map fitted on moments (the backtest's, the
    model choice's, the refit's) uses them alike, so the lead probabilities that the account calibrator
    learns from (the backtest's) and the ones it is applied to (the refit's) share one level. With
    ``fit`` the models' fitting rows carry them too (:func:`fit_weights`)."""
    if cfg.moment_weights == "none":
        return None
    from leadscore.features.moments import moment_weights

    return moment_weights(frame)


def fit_weights(frame: pd.DataFrame, decay: np.ndarray | None, cfg: TrainingConfig) -> np.ndarray | None:
    """The weights the models learn ``frame``'s rows with: the recency ``decay`` (None: none) times, when
    ``training.moment_weights`` is ``fit``, the rows' sampling weights."""
    if cfg.moment_weights != "fit":
        return decay
    from leadscore.features.moments import moment_weights

    return weight_product(decay, moment_weights(frame))


#: folds of the out-of-fold comparison of calibration methods (and of model candidates, training.choice)
CALIBRATION_FOLDS = 5


def fold_splits(y: np.ndarray, folds: int, seed: int, groups: np.ndarray | None = None
                ) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (fitting, held-out) positions of the calibration folds: stratified by outcome, by lead when
    ``groups`` name leads; at most as many folds as the rarer outcome has rows, none below two.

    Computed once per set of rows and shared by every method and model candidate scored on them:
    ``StratifiedGroupKFold`` places groups one by one in Python (a refit's 15,000 rows of 4,000 leads:
    ~2 s per split under load, 20 of them in one model choice)."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    y = np.asarray(y, np.float64)
    k = min(folds, int(np.bincount(y.astype(int), minlength=2).min()))
    if k < 2:
        return []
    x = np.zeros((len(y), 1))
    if groups is None:
        return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(x, y))
    return list(StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(x, y, groups))


def _out_of_fold_log_loss(
    fit: Callable[[np.ndarray, np.ndarray, np.ndarray | None], Calibrator], p: np.ndarray, y: np.ndarray,
    splits: list[tuple[np.ndarray, np.ndarray]], weights: np.ndarray | None = None,
) -> float:
    out = np.empty(len(p))
    for own, held in splits:
        out[held] = fit(p[own], y[own], None if weights is None else weights[own])(p[held])
    return _log_loss(y, out, weights)


def fit_calibrator(
    p: np.ndarray,
    y: np.ndarray,
    min_isotonic_rows: int = 1000,
    *,
    folds: int = CALIBRATION_FOLDS,
    seed: int = 0,
    groups: np.ndarray | None = None,
    splits: list[tuple[np.ndarray, np.ndarray]] | None = None,
    weights: np.ndarray | None = None,
) -> tuple[Calibrator, dict[str, float]]:
    """Fit sigmoid and (with enough rows) isotonic on the calibration rows; keep the one with the lower
    out-of-fold log loss on those same rows, refitted on all of them.

    ``groups`` (a lead id per row) keeps a lead's moments in one fold: they share a label and nearly a
    score, so folds that split them let isotonic's steps learn the held-out rows' own leads. On the
    3,000-lead generated CRMs (3.5-3.7 moments per lead in the calibration months, seeds 1-3 of both
    scenarios) isotonic won 3 of the 6 choices by 0.0004-0.004 with folds that split leads; by lead its
    out-of-fold log loss rose by 0.001-0.013 and sigmoid won all 6, as it did on the test months
    (lower log loss in all 6).

    The choice uses nothing but the calibration rows: the rows the model was fitted or stopped early
    on score optimistically, so choosing (or fitting) the map there would favour an overconfident
    one. Returns the chosen calibrator and the out-of-fold log loss of every candidate (including the
    uncalibrated ``identity``, reported but never chosen: a later period is assumed to drift).
    Isotonic needs ``min_isotonic_rows`` calibration rows, below that it overfits the steps. ``splits``:
    the folds (:func:`fold_splits`) when the caller scores several candidates on the same rows.
    ``weights`` weigh the rows in every map and in every log loss (the fit's recency decay times the
    moments' sampling weights, :func:`map_weights`): the map and its method then
    target the same rows the caller's map is fitted to.
    """
    p, y = np.asarray(p, np.float64), np.asarray(y, np.float64)
    counts = np.bincount(y.astype(int), minlength=2)
    if counts.min() == 0:
        raise ValueError("the calibration rows contain only one class; calibration needs both")
    fitters: dict[Method, Callable[[np.ndarray, np.ndarray, np.ndarray | None], Calibrator]] = {"sigmoid": fit_sigmoid}
    if len(p) >= min_isotonic_rows:
        fitters["isotonic"] = fit_isotonic
    w = None if weights is None else np.asarray(weights, np.float64)
    scores = {"identity": _log_loss(y, p, w)}
    splits = fold_splits(y, folds, seed, groups) if splits is None else splits
    for method, fit in fitters.items():
        scores[method] = _out_of_fold_log_loss(fit, p, y, splits, w) if splits else float("nan")
    best = min(fitters, key=lambda m: (np.nan_to_num(scores[m], nan=np.inf), m != "sigmoid"))
    return fitters[best](p, y, w), scores
