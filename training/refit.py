"""The production refit: the model that is registered, fitted on all matured months up to the cut-off.

The backtest (:func:`training.train.train_target`) chooses everything — hyper-parameters, rounds,
recency, model kind, calibration method — and measures the *procedure* on test months it never saw.
Shipping that backtest model would throw away the newest third of the history (validation,
calibration and test months), exactly the months most like the ones it will score. So the model that
is registered is refit with the backtest's choices on all matured months, newest included.

**Scheme ``cross_fit`` (default): every matured month fits, and the map is fitted out of fold on
all of them.** The newest ``split.calibration_months`` matured months are the rows most like the ones
the model will score, and on a growing CRM they are also the largest (on the 3,000-lead generated CRMs
45% of the matured rows): leaving them out of the fit cost 0.03 AUC (the registered booster 0.750 →
0.780 with them on the regime-shift CRM's test months). So the shipped models learn from every matured
month, and the calibration map is fitted on *out-of-fold* scores of every fitting row:
``refit_calibration_folds`` models, each fitted on the fitting rows but one fold of leads (grouped by
lead, so a lead's other moments never score it), score the held fold. The map is fitted with the
fit's own recency weights, so it targets the distribution the booster was fitted to, the one the
recency choice found best on the validation months. What it corrects is the booster's *shape*
(boosters that memorise leads score new leads lower and flatter than the leads they saw); the *level*
of the newest months alone is not a target: a map fitted on the newest two months only (this scheme
until it was measured) applies their base rate to the months after them, and a two-month base rate
does not carry. On the generated CRMs the newest pre-test months' label rate was 1.1-1.5x the test
months' (regime-shift: 0.177 in the calibration months, 0.122 in the test months; the lift converts
the stock of old open leads first, then fades; and every older month's rate is inflated by the moment
sampling, whose per-lead strata span the lead's whole history up to the cut-off, so older months keep
fewer moments of leads that stayed open), and that map over-predicted every test month (test ECE
0.038-0.068 over seeds 1-3, against 0.011-0.018 with the map on all months). Cost:
``refit_calibration_folds`` more boosters, each on the fitting rows less a fold, at the tuned learning
rate (:func:`refit_boosting`), and as many logistic models: its scores on its own fitting rows looked
harmless (an L2 model of a few hundred coefficients cannot memorise leads), but a blend's map fitted on
them was overconfident on new leads (regime-shift, seeds 1-3: the blend 0.75's test ECE 0.019-0.021
with in-sample logistic scores, 0.012-0.015 out of fold).

**The model kind is chosen again on the map's rows** (``model_choice.at_refit``, :func:`refit_choice`):
the backtest chose among candidates fitted on its oldest months (on the 3,000-lead generated CRMs a
quarter of the matured rows; on regime-shift, months before the shift), scored on its calibration
months; the refit's candidates are other models, fitted on every matured month. Their held-out scores
on the map's rows (out of fold with ``cross_fit``; with ``last_months`` the unfitted newest months)
compare the models that will be shipped, with :func:`training.choice.choose_model`'s criterion. On both
generated CRMs, seeds 1-3, the backtest chose the trees alone 5 times in 6 where the refit's blend 0.75
had the higher test AUC (+0.006 on average; +0.007 over 30 refits of five procedure variants, 29 of 30
higher), and the refit's out-of-fold comparison chose a blend in all 6. The comparison weighs the rows
as the shipped map does (recency decay, and moment weights with ``training.moment_weights``): unweighted,
it scored every candidate on the old months as much as on the newest, and on the generated CRM, seed 1,
it shipped the blend 0.5 (test AUC 0.797) where the weighted comparison ships the blend 0.75 (0.801).

**Moment weights** (``training.moment_weights``, default ``fit``): the moment sampler keeps fewer
moments of leads that stay open in older months (:mod:`features.moments`), so their label rate is
inflated (seed 1: 0.042 in the newest pre-test months against 0.026 at every moment). With ``fit`` the
models, the recency probes and every map learn each moment with its sampling weight (scaled per month);
with ``recency.at_refit`` (default on) the refit chooses its recency again on its newest months
(:func:`refit_recency`). On the generated CRMs, seeds 1-3, test ECE fell from 0.017 / 0.012 / 0.017 to
0.005 / 0.013 / 0.008 (AUC 0.801 / 0.792 / 0.809 to 0.810 / 0.806 / 0.814, with extra trees), but on the
regime-shift CRM the sample's ECE rose from 0.014 to 0.032 (its population ECE fell, 0.020 to 0.013): at
every moment the pre-shift months' rate is a quarter of the post-shift months', a level shift the sampled
rates hid. README, Results, has the figures.

**The fold models are kept** (:attr:`Refit.models`): the account calibrator
(:mod:`training.account_calibration`) maps the noisy-OR of the shipped model's lead scores, so it is
fitted on that model's level, and every account-moment lead is scored by the fold's models that held
it out (:meth:`RefitModels.held_out_raw`): the same scores the shipped map was fitted on, none from a
model that fitted the lead.

**Scheme ``last_months``: a slice.** The newest ``split.calibration_months`` matured months calibrate
the refit; every older matured month (within the chosen recency window) fits it. Calibration rows are
never fitted: it calibrates the very booster that is shipped, at the cost of not fitting on the newest
months.

Rounds: the fit has no early-stopping rows, so it boosts the backtest's final rounds at its final
learning rate (more rows usually support slightly more rounds; the backtest's are the conservative
choice; ``lightgbm.refit_rounds_exponent`` scales them with the row ratio). The logistic part is refit on the same rows with the same weights. Every candidate kind is
refit (trees and logistic model) when ``model_choice.at_refit`` may pick any of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from leadscore.training.bundle import TargetModel
from leadscore.training.calibration import (
    Calibrator,
    fit_isotonic,
    fit_sigmoid,
    fit_weights,
    map_weights,
    weight_product,
)
from leadscore.training.choice import ModelChoice, Recency, candidate_raw, choose_model
from leadscore.training.config import TrainingConfig
from leadscore.training.dask_fit import final_booster
from leadscore.training.encoding import categorical_indices, encode_frame, fit_encodings
from leadscore.training.fit import FitResult
from leadscore.training.linear import fit_linear
from leadscore.training.split import TimeSplit

#: how the newest months calibrate the refit (module docstring)
RefitScheme = Literal["cross_fit", "last_months"]


@dataclass(frozen=True)
class RefitRows:
    """Positions of the refit's fit rows and of the rows its calibration map is fitted on, and the months.

    ``scheme`` ``last_months``: ``fit`` and ``calibration`` (the newest months) are disjoint;
    ``cross_fit``: ``fit`` holds the newest months too and ``calibration`` is ``fit`` (every fitting row
    is scored out of fold for the map, see the module docstring). ``calibration_start`` is where the
    newest months start either way (recency weights count back from it).
    """

    fit: np.ndarray
    calibration: np.ndarray
    fit_start: pd.Timestamp
    calibration_start: pd.Timestamp
    end: pd.Timestamp
    scheme: RefitScheme = "last_months"

    @classmethod
    def of(cls, older: np.ndarray, calibration: np.ndarray, as_of: pd.Series, calibration_start: pd.Timestamp,
           end: pd.Timestamp, scheme: RefitScheme) -> RefitRows:
        """The rows of ``scheme`` from the older fitting rows (already windowed) and the newest months."""
        if scheme == "last_months":
            fit = older
        else:
            fit = calibration = np.sort(np.concatenate([older, calibration]))
        fit_start = pd.Timestamp(as_of.iloc[fit].min()) if len(fit) else calibration_start
        return cls(fit, calibration, fit_start, calibration_start, end, scheme)

    def calibration_weights(self, frame: pd.DataFrame, recency: Recency, cfg: TrainingConfig) -> np.ndarray | None:
        """The map's row weights: the fit's recency weights (``last_months``: its rows are all newer than
        ``calibration_start``, so all 1), times the moments' sampling weights when
        ``training.moment_weights`` (:func:`training.calibration.map_weights`)."""
        rows = frame.iloc[self.calibration]
        w = recency.weights(rows["as_of"], self.calibration_start)
        return weight_product(w, map_weights(rows, cfg))


def refit_rows(as_of: pd.Series, labelled: np.ndarray, split: TimeSplit, recency: Recency,
               calibration_months: int, scheme: RefitScheme = "cross_fit") -> RefitRows:
    """Every labelled moment before ``split.test_end`` (the last matured month's end): the newest
    ``calibration_months`` calibrate, the older ones inside the recency window fit (with ``cross_fit``
    the newest ones fit too and every fitting row calibrates)."""
    end = split.test_end
    cal_start = end - pd.DateOffset(months=calibration_months)
    before = np.flatnonzero(labelled & np.asarray(as_of < cal_start))
    fit = recency.rows(before, as_of, cal_start)
    cal = np.flatnonzero(labelled & np.asarray((as_of >= cal_start) & (as_of < end)))
    return RefitRows.of(fit, cal, as_of, cal_start, end, scheme)


@dataclass(frozen=True)
class Refit:
    model: TargetModel
    rows: RefitRows
    positives: dict[str, int]
    #: calibrated log loss on the map's rows (in-sample for the map; it describes the fit, not the procedure)
    calibration_log_loss: float
    #: the shipped kind as the refit chose it (:func:`refit_choice`; the backtest's without ``at_refit``)
    choice: ModelChoice | None = None
    #: the decay and window the refit fitted with (chosen again with ``recency.at_refit``)
    recency: str | None = None
    #: the fitted candidates, folds included (:meth:`RefitModels.held_out_raw`): what scores rows the
    #: shipped model fitted without leakage (the account calibrator's, :mod:`training.account_calibration`)
    models: RefitModels | None = field(default=None, repr=False, compare=False)

    def held_out_probability(self, features: pd.DataFrame) -> np.ndarray:
        """Calibrated probabilities of ``features`` (rows with ``lead_id``) at the shipped model's level,
        each row scored by a model that never fitted its lead (:meth:`RefitModels.held_out_raw`) and put
        through the shipped calibration map (fitted on such scores with ``cross_fit``)."""
        assert self.models is not None and self.choice is not None
        return self.model.calibrator(self.models.held_out_raw(features, self.choice.kind, self.choice.blend_weight))

    def window(self) -> dict[str, Any]:
        """What the bundle's training window records about the refit."""
        months = pd.period_range(self.rows.fit_start.tz_localize(None), self.rows.end.tz_localize(None), freq="M")
        cal = str(self.rows.calibration_start.tz_localize(None).to_period("M"))
        names = [str(m) for m in months[:-1]]
        fitted = names if self.rows.scheme == "cross_fit" else [m for m in names if m < cal]
        calibrated = names if self.rows.scheme == "cross_fit" else [m for m in names if m >= cal]
        return {"fit_months": fitted, "calibration_months": calibrated,
                "rows": {"fit": len(self.rows.fit), "calibration": len(self.rows.calibration)},
                "positives": self.positives, "calibration_log_loss": self.calibration_log_loss,
                "scheme": self.rows.scheme, "recency": self.recency}


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
    #: ``cross_fit``: out-of-fold raw scores of the calibration (= fitting) rows, by model (``trees``, ``linear``)
    out_of_fold: dict[str, np.ndarray] | None = None
    #: ``cross_fit`` on rows naming leads: the fold models, each with the leads it did not fit
    folds: tuple[RefitFold, ...] = ()

    def raw(self, frame: pd.DataFrame, kind: str, weight: float | None) -> np.ndarray:
        """A candidate's raw probability on ``frame``'s rows."""
        p_trees = p_linear = None
        if kind != "logistic":
            assert self.booster is not None
            p_trees = np.asarray(self.booster.predict(encode_frame(frame, self.schema, self.encodings)))
        if kind != "lightgbm":
            p_linear = self.linear.predict(frame)
        return candidate_raw(kind, weight, p_trees, p_linear)

    def held_out_raw(self, frame: pd.DataFrame, kind: str, weight: float | None) -> np.ndarray:
        """A candidate's raw probability on rows of ``frame`` (column ``lead_id``) from models that never
        fitted their lead: a lead held out of a calibration fold is scored by that fold's models, any other
        lead by the shipped models (with ``cross_fit`` they fitted every lead with a matured moment, and
        each of those is held out of one fold; with ``last_months`` they are scored by the shipped models,
        the caller keeps the rows they did not fit)."""
        out = np.full(len(frame), np.nan)
        leads = frame["lead_id"].astype(str).to_numpy()
        rest = np.ones(len(frame), dtype=bool)
        for fold in self.folds:
            mine = np.isin(leads, fold.leads)
            if mine.any():
                out[mine] = fold.models.raw(frame.iloc[np.flatnonzero(mine)], kind, weight)
                rest &= ~mine
        if rest.any():
            out[rest] = self.raw(frame.iloc[np.flatnonzero(rest)], kind, weight)
        return out

    def calibration_raw(self, frame: pd.DataFrame, kind: str, weight: float | None) -> np.ndarray:
        """A candidate's raw probability on the calibration rows ``frame``, as the map must see it:
        out of fold when they were fitted (``cross_fit``), else the shipped models' scores."""
        if self.out_of_fold is None:
            return self.raw(frame, kind, weight)
        return candidate_raw(kind, weight, self.out_of_fold.get("trees"), self.out_of_fold.get("linear"))


@dataclass(frozen=True)
class RefitFold:
    """One ``cross_fit`` calibration fold: the models fitted without it, and the leads it held out."""

    leads: np.ndarray
    models: RefitModels


def refit_models(
    frame: pd.DataFrame, y: np.ndarray, rows: RefitRows, schema: Sequence[Mapping[str, Any]], cfg: TrainingConfig,
    recency: Recency, backtest: FitResult, *, trees: bool = True, linear: bool = True, client: Any = None,
) -> RefitModels:
    """Fit the booster (the backtest's parameters and final rounds) and/or the logistic model on
    ``rows.fit``, weighted by ``recency``'s decay counted back from the calibration slice; the booster
    on the Dask cluster behind ``client`` when the rows are many (:func:`training.dask_fit.final_booster`)."""
    if len(rows.fit) == 0 or len(np.unique(y[rows.fit])) < 2 or len(np.unique(y[rows.calibration])) < 2:
        raise ValueError("the refit's fit or calibration months lack one of the outcomes")
    weights = fit_weights(frame.iloc[rows.fit], recency.weights(frame["as_of"].iloc[rows.fit], rows.calibration_start),
                          cfg)
    params, rounds = refit_boosting(backtest, cfg, rows.scheme, len(rows.fit))

    def fit_trees(fit: np.ndarray, w: np.ndarray | None, cluster: Any = None) -> tuple[Any, dict[str, list[str]]]:
        encodings = fit_encodings(frame.iloc[fit], schema)
        return final_booster(encode_frame(frame.iloc[fit], schema, encodings), y[fit], w, categorical_indices(schema),
                             params, rounds, cfg, cluster), encodings

    # the shipped booster goes to the cluster when there is one and the table is large (training.dask_fit);
    # the calibration folds' boosters, each on a fold of the same rows, stay here
    booster, encodings = fit_trees(rows.fit, weights, client) if trees else (None, backtest.encodings)
    lin = fit_linear(frame.iloc[rows.fit], y[rows.fit], schema, weights=weights, seed=cfg.seed) if linear else None
    out_of_fold, folds = None, []
    if rows.scheme == "cross_fit":
        # both models out of fold (module docstring: in-sample logistic scores made a blend's map overconfident)
        out_of_fold = {name: np.empty(len(rows.calibration)) for name, on in (("trees", trees), ("linear", linear))
                       if on}
        for held in _calibration_folds(frame, y, rows.calibration, cfg.refit_calibration_folds, cfg.seed):
            keep = ~np.isin(rows.fit, rows.calibration[held])
            w_keep = None if weights is None else weights[keep]
            scored = frame.iloc[rows.calibration[held]]
            b, enc, fold_lin = None, encodings, None
            if trees:
                b, enc = fit_trees(rows.fit[keep], w_keep)
                out_of_fold["trees"][held] = b.predict(encode_frame(scored, schema, enc))
            if linear:
                fold_lin = fit_linear(frame.iloc[rows.fit[keep]], y[rows.fit[keep]], schema, weights=w_keep,
                                      seed=cfg.seed)
                out_of_fold["linear"][held] = fold_lin.predict(scored)
            if "lead_id" in frame.columns:  # kept: they score the account calibrator's rows (Refit.models)
                folds.append(RefitFold(np.unique(scored["lead_id"].astype(str).to_numpy()),
                                       RefitModels(None, enc, fold_lin, schema, b)))
    model_str = None if booster is None else str(booster.model_to_string())
    return RefitModels(model_str, encodings, lin, schema, booster, out_of_fold, tuple(folds))


def refit_boosting(backtest: FitResult, cfg: TrainingConfig, scheme: RefitScheme, rows: int = 0
                   ) -> tuple[dict[str, Any], int]:
    """The refit booster's parameters and rounds.

    ``last_months``: the backtest's final fit as it is (its learning rate, its early-stopped rounds).
    ``cross_fit`` fits ``refit_calibration_folds`` + 1 boosters, so each boosts at the *tuned* learning
    rate for ``final_learning_rate_factor`` times the rounds: the same step length times rounds, the
    whole refit at the cost of the one slow-rate booster it replaces (a train must not get slower). On
    the generated CRMs the slow rate's gain is within noise (it pays in the backtest's early-stopped
    fit, not in a fixed-round refit), the newest months' rows are worth 0.03-0.07 AUC.
    """
    rounds = max(1, backtest.rounds[0])
    exponent = cfg.lightgbm.refit_rounds_exponent
    if exponent and rows > len(backtest.rows.fit) > 0:
        # more rows support more rounds: the backtest's times (refit rows / backtest rows) ** exponent
        rounds = max(1, round(rounds * (rows / len(backtest.rows.fit)) ** exponent))
    if scheme == "last_months":
        return backtest.params, rounds
    factor = cfg.lightgbm.final_learning_rate_factor
    return ({**backtest.params, "learning_rate": backtest.params["learning_rate"] / factor},
            max(1, round(rounds * factor)))


def _calibration_folds(frame: pd.DataFrame, y: np.ndarray, calibration: np.ndarray, folds: int, seed: int
                       ) -> list[np.ndarray]:
    """Held-out positions into ``calibration``, one array per fold: by lead when the frame names leads
    (a lead's other moments must not score it), else stratified by outcome."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    yc = y[calibration].astype(int)
    k = max(2, min(folds, int(np.bincount(yc, minlength=2).min())))
    if "lead_id" in frame.columns:
        groups = frame["lead_id"].iloc[calibration].astype(str).to_numpy()
        split = StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(calibration, yc, groups)
    else:
        split = StratifiedKFold(k, shuffle=True, random_state=seed).split(calibration, yc)
    return [held for _, held in split]


def calibrate_as(method: str, raw: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> Calibrator:
    """Refit a calibration map of the given method, rows weighted by ``weights`` (``identity`` needs no fit)."""
    fitter = {"sigmoid": fit_sigmoid, "isotonic": fit_isotonic}.get(method)
    return fitter(raw, y, weights) if fitter is not None else Calibrator.identity()


def refit_kinds(cfg: TrainingConfig, choice: ModelChoice) -> tuple[bool, bool]:
    """Whether the refit needs the trees and the logistic model: those of the backtest's choice, or with
    ``model_choice.at_refit`` those of every candidate."""
    kinds = set(cfg.model_choice.candidates) if cfg.model_choice.at_refit else {choice.kind}
    return bool(kinds - {"logistic"}), bool(kinds - {"lightgbm"})


def refit_choice(models: RefitModels, frame: pd.DataFrame, y: np.ndarray, rows: RefitRows, cfg: TrainingConfig,
                 choice: ModelChoice, recency: Recency) -> ModelChoice:
    """The model kind the refit ships: chosen again among the refit candidates on the map's held-out scores
    (module docstring), or the backtest's ``choice`` when ``model_choice.at_refit`` is off or a model is missing."""
    if not cfg.model_choice.at_refit or models.booster is None or models.linear is None:
        return choice
    cal = frame.iloc[rows.calibration]
    leads = cal["lead_id"].astype(str).to_numpy() if "lead_id" in cal.columns else None
    # the candidates are compared on the rows as the shipped map weighs them (recency, moment weights)
    return choose_model(models.calibration_raw(cal, "lightgbm", None), models.calibration_raw(cal, "logistic", None),
                        np.asarray(y, dtype=np.float64)[rows.calibration], cfg, seed=cfg.seed, groups=leads,
                        weights=rows.calibration_weights(frame, recency, cfg))


def refit_on_rows(
    frame: pd.DataFrame, y: np.ndarray, rows: RefitRows, schema: Sequence[Mapping[str, Any]], cfg: TrainingConfig,
    recency: Recency, choice: ModelChoice, backtest: FitResult, client: Any = None,
) -> Refit:
    """Refit the candidates on ``rows.fit``, choose the kind (:func:`refit_choice`), calibrate it on
    ``rows.calibration``."""
    trees, linear = refit_kinds(cfg, choice)
    models = refit_models(frame, y, rows, schema, cfg, recency, backtest, trees=trees, linear=linear, client=client)
    choice = refit_choice(models, frame, y, rows, cfg, choice, recency)
    y_cal = y[rows.calibration]
    raw = models.calibration_raw(frame.iloc[rows.calibration], choice.kind, choice.blend_weight)
    calibrator = calibrate_as(choice.calibrator.method, raw, y_cal, rows.calibration_weights(frame, recency, cfg))
    params, rounds = refit_boosting(backtest, cfg, rows.scheme, len(rows.fit))
    model = TargetModel(model_str=models.model_str if choice.kind != "logistic" else None,
                        encodings=models.encodings, calibrator=calibrator, params={**params, "num_iterations": rounds},
                        kind=choice.kind, linear=models.linear if choice.kind != "lightgbm" else None,
                        blend_weight=choice.blend_weight)
    return Refit(model, rows, {"fit": int(y[rows.fit].sum()), "calibration": int(y_cal.sum())},
                 _log_loss(y_cal, calibrator(raw)), choice, recency.label, models)


def refit_recency(frame: pd.DataFrame, y: np.ndarray, older: np.ndarray, newest: np.ndarray,
                  calibration_start: pd.Timestamp, schema: Sequence[Mapping[str, Any]], cfg: TrainingConfig,
                  recency: Recency) -> Recency:
    """The refit's recency: with ``recency.at_refit``, chosen again (:func:`training.choice.choose_recency`)
    fitting the ``older`` rows and validating on the ``newest`` months, counted back from their start;
    else the backtest's ``recency``. The backtest chose on its oldest months, which on a drifting CRM are
    all before the drift."""
    if not cfg.recency.at_refit or len(older) == 0 or len(np.unique(y[newest])) < 2:
        return recency
    from leadscore.training.choice import choose_recency

    return choose_recency(frame, y, older, newest, frame["as_of"], calibration_start, schema, cfg,
                          seed=cfg.seed).chosen


def refit_target(
    frame: pd.DataFrame, y: np.ndarray, labelled: np.ndarray, schema: Sequence[Mapping[str, Any]],
    cfg: TrainingConfig, split: TimeSplit, recency: Recency, choice: ModelChoice, backtest: FitResult,
    client: Any = None,
) -> Refit:
    """Refit the backtest's chosen model on all matured months (module docstring) and calibrate it."""
    if cfg.refit == "none":
        raise ValueError("training.refit is 'none': there is no refit to make")
    cal_start = split.test_end - pd.DateOffset(months=cfg.split.calibration_months)
    as_of = frame["as_of"]
    older, newest = np.asarray(as_of < cal_start), np.asarray((as_of >= cal_start) & (as_of < split.test_end))
    recency = refit_recency(frame, y, np.flatnonzero(labelled & older), np.flatnonzero(labelled & newest), cal_start,
                            schema, cfg, recency)
    rows = refit_rows(frame["as_of"], labelled, split, recency, cfg.split.calibration_months, cfg.refit)
    return refit_on_rows(frame, y, rows, schema, cfg, recency, choice, backtest, client)


__all__ = ["Refit", "RefitFold", "RefitModels", "RefitRows", "RefitScheme", "calibrate_as", "refit_boosting", "refit_choice",
           "refit_kinds", "refit_models", "refit_on_rows", "refit_recency", "refit_rows", "refit_target"]
