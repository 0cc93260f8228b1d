"""The production refit: the model that is registered, fitted on all matured months up to the cut-off.

The backtest (:func:`training.train.train_target`) chooses everything — hyper-parameters, rounds,
recency, model kind, calibration method — and measures the *procedure* on test months it never saw.
Shipping that backtest model would throw away the newest third of the history (validation,
calibration and test months), exactly the months most like the ones it will score. So the model that
is registered is refit with the backtest's choices on all matured months, newest included.

**Scheme: a last-months slice.** The newest ``split.calibration_months`` matured months calibrate
the refit; every older matured month (within the chosen recency window) fits it. Calibration rows are
never fitted. Why not cross-fitting over time (fit on everything, calibrate with scores of models
that each left some months out)? Under drift the two disagree exactly where it matters: the
left-out models have not seen the newest regime, so their scores on it are low and the map learned
from them lifts scores — but the shipped model *has* seen that regime and scores it high already, and
the lift is applied twice (overconfident scores at the moment of a shift). A slice calibrates the very
booster that is shipped, on the newest rows, at the cost of not fitting on the newest
``calibration_months``; they still correct its level.

Rounds: the fit has no early-stopping rows, so it boosts the backtest's final rounds at its final
learning rate (more rows usually support slightly more rounds; the backtest's are the conservative
choice). The logistic part is refit on the same rows with the same weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from leadscore.training.bundle import TargetModel
from leadscore.training.calibration import Calibrator, fit_isotonic, fit_sigmoid
from leadscore.training.choice import ModelChoice, Recency, candidate_raw
from leadscore.training.config import TrainingConfig
from leadscore.training.dask_fit import final_booster
from leadscore.training.encoding import categorical_indices, encode_frame, fit_encodings
from leadscore.training.fit import FitResult
from leadscore.training.linear import fit_linear
from leadscore.training.split import TimeSplit


@dataclass(frozen=True)
class RefitRows:
    """Positions of the refit's fit and calibration rows and the months they span."""

    fit: np.ndarray
    calibration: np.ndarray
    fit_start: pd.Timestamp
    calibration_start: pd.Timestamp
    end: pd.Timestamp


def refit_rows(as_of: pd.Series, labelled: np.ndarray, split: TimeSplit, recency: Recency,
               calibration_months: int) -> RefitRows:
    """Every labelled moment before ``split.test_end`` (the last matured month's end): the newest
    ``calibration_months`` calibrate, the older ones inside the recency window fit."""
    end = split.test_end
    cal_start = end - pd.DateOffset(months=calibration_months)
    ts = as_of.to_numpy()
    before = np.flatnonzero(labelled & np.asarray(as_of < cal_start))
    fit = recency.rows(before, as_of, cal_start)
    cal = np.flatnonzero(labelled & np.asarray((as_of >= cal_start) & (as_of < end)))
    fit_start = pd.Timestamp(ts[fit].min()) if len(fit) else cal_start
    return RefitRows(fit, cal, fit_start, cal_start, end)


@dataclass(frozen=True)
class Refit:
    model: TargetModel
    rows: RefitRows
    positives: dict[str, int]
    #: calibrated log loss on the calibration slice (in-sample for the map; it describes the fit, not the procedure)
    calibration_log_loss: float

    def window(self) -> dict[str, Any]:
        """What the bundle's training window records about the refit."""
        months = pd.period_range(self.rows.fit_start.tz_localize(None), self.rows.end.tz_localize(None), freq="M")
        cal = str(self.rows.calibration_start.tz_localize(None).to_period("M"))
        names = [str(m) for m in months[:-1]]
        return {"fit_months": [m for m in names if m < cal], "calibration_months": [m for m in names if m >= cal],
                "rows": {"fit": len(self.rows.fit), "calibration": len(self.rows.calibration)},
                "positives": self.positives, "calibration_log_loss": self.calibration_log_loss,
                "scheme": "last_months"}


def _log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


@dataclass(frozen=True)
class RefitModels:
    """The refit's booster (None when the trees are not needed) and logistic model (likewise)."""

    model_str: str | None
    encodings: dict[str, list[str]]
    linear: Any
    schema: Sequence[Mapping[str, Any]]
    booster: Any = None

    def raw(self, frame: pd.DataFrame, kind: str, weight: float | None) -> np.ndarray:
        """A candidate's raw probability on ``frame``'s rows."""
        p_trees = p_linear = None
        if kind != "logistic":
            assert self.booster is not None
            p_trees = np.asarray(self.booster.predict(encode_frame(frame, self.schema, self.encodings)))
        if kind != "lightgbm":
            p_linear = self.linear.predict(frame)
        return candidate_raw(kind, weight, p_trees, p_linear)


def refit_models(
    frame: pd.DataFrame, y: np.ndarray, rows: RefitRows, schema: Sequence[Mapping[str, Any]], cfg: TrainingConfig,
    recency: Recency, backtest: FitResult, *, trees: bool = True, linear: bool = True, client: Any = None,
) -> RefitModels:
    """Fit the booster (the backtest's parameters and final rounds) and/or the logistic model on
    ``rows.fit``, weighted by ``recency``'s decay counted back from the calibration slice; the booster
    on the Dask cluster behind ``client`` when the rows are many (:func:`training.dask_fit.final_booster`)."""
    if len(rows.fit) == 0 or len(np.unique(y[rows.fit])) < 2 or len(np.unique(y[rows.calibration])) < 2:
        raise ValueError("the refit's fit or calibration months lack one of the outcomes")
    weights = recency.weights(frame["as_of"].iloc[rows.fit], rows.calibration_start)
    model_str, encodings, booster = None, backtest.encodings, None
    if trees:
        encodings = fit_encodings(frame.iloc[rows.fit], schema)
        booster = final_booster(encode_frame(frame.iloc[rows.fit], schema, encodings), y[rows.fit], weights,
                                categorical_indices(schema), backtest.params, backtest.rounds[0], cfg, client)
        model_str = str(booster.model_to_string())
    lin = fit_linear(frame.iloc[rows.fit], y[rows.fit], schema, weights=weights, seed=cfg.seed) if linear else None
    return RefitModels(model_str, encodings, lin, schema, booster)


def calibrate_as(method: str, raw: np.ndarray, y: np.ndarray) -> Calibrator:
    """Refit a calibration map of the given method (``identity`` needs no fit)."""
    fitter = {"sigmoid": fit_sigmoid, "isotonic": fit_isotonic}.get(method)
    return fitter(raw, y) if fitter is not None else Calibrator.identity()


def refit_on_rows(
    frame: pd.DataFrame, y: np.ndarray, rows: RefitRows, schema: Sequence[Mapping[str, Any]], cfg: TrainingConfig,
    recency: Recency, choice: ModelChoice, backtest: FitResult, client: Any = None,
) -> Refit:
    """Refit the backtest's chosen model on ``rows.fit``; calibrate it on ``rows.calibration``."""
    models = refit_models(frame, y, rows, schema, cfg, recency, backtest, trees=choice.kind != "logistic",
                          linear=choice.kind != "lightgbm", client=client)
    y_cal = y[rows.calibration]
    raw = models.raw(frame.iloc[rows.calibration], choice.kind, choice.blend_weight)
    calibrator = calibrate_as(choice.calibrator.method, raw, y_cal)
    model = TargetModel(model_str=models.model_str, encodings=models.encodings, calibrator=calibrator,
                        params={**backtest.params, "num_iterations": backtest.rounds[0]}, kind=choice.kind,
                        linear=models.linear, blend_weight=choice.blend_weight)
    return Refit(model, rows, {"fit": int(y[rows.fit].sum()), "calibration": int(y_cal.sum())},
                 _log_loss(y_cal, calibrator(raw)))


def refit_target(
    frame: pd.DataFrame, y: np.ndarray, labelled: np.ndarray, schema: Sequence[Mapping[str, Any]],
    cfg: TrainingConfig, split: TimeSplit, recency: Recency, choice: ModelChoice, backtest: FitResult,
    client: Any = None,
) -> Refit:
    """Refit the backtest's chosen model on all matured months (module docstring); calibrate on the slice."""
    rows = refit_rows(frame["as_of"], labelled, split, recency, cfg.split.calibration_months)
    return refit_on_rows(frame, y, rows, schema, cfg, recency, choice, backtest, client)


__all__ = ["Refit", "RefitModels", "RefitRows", "calibrate_as", "refit_models", "refit_on_rows", "refit_rows",
           "refit_target"]
