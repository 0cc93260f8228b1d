"""The account calibrator learns on the level of the lead model that ships, from scores without leakage.

* the refit's held-out scores (:meth:`training.refit.RefitModels.held_out_raw`): a lead the refit fitted
  is scored by the calibration fold's models that held it out (exactly the out-of-fold scores its
  calibration map was fitted on), a lead it never fitted by the shipped models;
* the calibrator fitted on calibrated lead scores learns no shift (a noisy-OR of independent, calibrated
  leads is calibrated); fitted on another model's inflated scores, it learns that model's correction,
  which the shipped scores do not need (the failure that moved it off the backtest's scores);
* :func:`training.account_calibration.shipped_scores`: which model scores which months, per refit scheme.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, cast

import numpy as np
import pandas as pd
import pytest

from leadscore.config import Settings
from leadscore.training.account_calibration import (
    AccountMoments,
    ShippedScores,
    fit_account_calibration,
    shipped_scores,
)
from leadscore.training.calibration import Calibrator
from leadscore.training.choice import ModelChoice, Recency
from leadscore.training.split import TimeSplit
from tests.test_model_choice import SCHEMA, _leads_without_signal

if TYPE_CHECKING:
    from leadscore.training.bundle import BoundBundle

MONTHS = [pd.Timestamp(m, tz="UTC") for m in ("2024-09-01", "2024-10-01", "2024-11-01", "2024-12-01")]
#: validation 2024-09, calibration 2024-10, test 2024-11 and 2024-12
SPLIT = TimeSplit("opportunity", 90, pd.Timestamp("2024-01-01", tz="UTC"), MONTHS[0], MONTHS[1], MONTHS[2],
                  pd.Timestamp("2025-01-01", tz="UTC"))


def _account_moments(accounts: int, seed: int, lift: float = 0.0, lift_until: pd.Timestamp = SPLIT.test_start
                     ) -> AccountMoments:
    """Accounts with 1-4 open leads at each month start, each lead's true P(opportunity) in ``p_true``;
    the account converts when one of its leads does, independently: the noisy-OR of the true
    probabilities is the account's probability (``lift``: the leads convert at that many more log-odds
    than ``p_true`` says in the months before ``lift_until``)."""
    rng = np.random.default_rng(seed)
    leads, labels = [], []
    for as_of in MONTHS:
        n = rng.integers(1, 5, accounts)
        account = np.repeat([f"a{i}" for i in range(accounts)], n)
        p_score = rng.beta(0.7, 12.0, len(account))
        shift = lift if as_of < lift_until else 0.0
        p = 1 / (1 + np.exp(-(np.log(p_score / (1 - p_score)) + shift)))
        leads.append(pd.DataFrame({"lead_id": [f"l{as_of:%m}-{i}" for i in range(len(account))], "account_id": account,
                                   "as_of": as_of, "role": "user", "last_engaged_at": pd.NaT, "p_true": p_score}))
        hit = pd.Series(rng.random(len(p)) < p).groupby(account).any()
        labels.append(pd.DataFrame({"account_id": hit.index, "as_of": as_of, "y": hit.to_numpy().astype(int)}))
    return AccountMoments(pd.concat(leads, ignore_index=True), pd.concat(labels, ignore_index=True))


def _scores(shift: float) -> ShippedScores:
    """A lead scorer at the true level shifted by ``shift`` in log-odds, on the default months."""

    def score(leads: pd.DataFrame) -> np.ndarray:
        p = leads["p_true"].to_numpy()
        return 1 / (1 + np.exp(-(np.log(p / (1 - p)) + shift)))

    return ShippedScores(score, (SPLIT.validation_start, SPLIT.test_start), (SPLIT.test_start, SPLIT.test_end),
                         "cross_fit")


def test_calibrated_lead_scores_need_no_shift_and_inflated_ones_get_their_own(settings: Settings) -> None:
    moments = _account_moments(2500, seed=1)
    shipped = fit_account_calibration(moments, _scores(0.0), settings)
    assert shipped is not None and shipped.months == ("2024-09", "2024-10")
    assert shipped.report["scored_by"] == "cross_fit" and shipped.report["test_months"] == ["2024-11", "2024-12"]
    # calibrated leads, independent conversions: the map learnt is the identity, within its noise
    learnt = shipped.report.get("rejected", {"coef": shipped.coef, "intercept": shipped.intercept})
    assert learnt["intercept"] == pytest.approx(0.0, abs=0.2) and learnt["coef"][0] == pytest.approx(1.0, abs=0.08)
    before, after = shipped.report["test_before"], shipped.report["test_after"]
    assert before["ece"] < 0.02 and after["ece"] < 0.02 and abs(after["ece"] - before["ece"]) < 0.005
    assert shipped.report["check"]["month"] == "2024-10" and abs(after["log_loss"] - before["log_loss"]) < 0.002
    # scores 0.8 log-odds too high (another model's level): the map learns a correction that carries ...
    inflated = fit_account_calibration(moments, _scores(0.8), settings)
    assert inflated is not None and inflated.report["map"] == "platt" and inflated.intercept < -0.5
    assert inflated.report["test_after"]["ece"] < inflated.report["test_before"]["ece"] - 0.02
    # ... which, applied to the calibrated scores that ship, under-predicts every account
    rows = moments.labels.merge(
        moments.leads.assign(p=_scores(0.0).score(moments.leads)).groupby(["account_id", "as_of"])["p"]
        .apply(lambda p: 1 - np.prod(1 - p)).rename("p_noisy_or").reset_index(), on=["account_id", "as_of"])
    assert inflated.apply(rows).mean() < rows["y"].mean() - 0.02
    assert abs(shipped.apply(rows).mean() - rows["y"].mean()) < 0.01


def test_a_map_that_does_not_carry_forward_is_not_shipped_and_the_test_months_decide_nothing(
    settings: Settings,
) -> None:
    """The validation month converts above the (calibrated) scores, the calibration month does not: the
    probe map learns the lift on the first, loses to the raw noisy-OR on the second, and the identity
    ships. When both fitting months carry the lift and the test months do not, the map ships (nothing
    before the test months says otherwise) and the test report shows it losing: the test months are
    reported, never used to choose."""
    cal = fit_account_calibration(_account_moments(2500, seed=2, lift=0.6, lift_until=MONTHS[1]), _scores(0.0),
                                  settings)
    assert cal is not None and cal.report["map"] == "identity"
    assert cal.report["rejected"]["intercept"] > 0.1  # what the fitting months taught it
    check = cal.report["check"]
    assert check["month"] == "2024-10" and check["platt"]["log_loss"] > check["before"]["log_loss"]
    assert cal.report["test_after"] == cal.report["test_before"] and cal.intercept == 0.0 and cal.coef == (1.0,)
    q = np.array([0.01, 0.2, 0.7])
    assert cal.apply(pd.DataFrame({"p_noisy_or": q})) == pytest.approx(q)  # p_account is the noisy-OR
    drifted = fit_account_calibration(_account_moments(2500, seed=2, lift=0.6), _scores(0.0), settings)
    assert drifted is not None and drifted.report["map"] == "platt" and drifted.intercept > 0.3
    assert drifted.report["test_after"]["log_loss"] > drifted.report["test_before"]["log_loss"]


def test_refit_held_out_scores_are_the_folds_out_of_fold_scores_and_the_shipped_models_elsewhere(
    settings: Settings,
) -> None:
    """On leads a memorising refit fitted, its held-out scores are those its fold models gave out of fold
    (flat, as the labels carry no signal); on new leads, the shipped model's."""
    from leadscore.training.fit import RowSets, fit_target
    from leadscore.training.refit import refit_target

    cfg = settings.training.model_copy(update={"refit": "cross_fit"})
    months = [f"2024-{m:02d}-01" for m in range(1, 13)]
    parts = [_leads_without_signal(100, seed=k + 1, start=m) for k, m in enumerate(months)]
    frame = pd.concat([p[0] for p in parts], ignore_index=True)
    y = np.concatenate([p[1] for p in parts])
    edge = [pd.Timestamp(m, tz="UTC") for m in ("2024-01-01", "2024-07-01", "2024-09-01", "2024-11-01", "2025-01-01")]
    split = TimeSplit("opportunity", 30, *edge)
    per = {p: np.flatnonzero(split.mask(frame["as_of"], p)) for p in ("train", "validation", "calibration")}
    backtest = fit_target(frame, y, RowSets(per["train"], per["validation"], per["calibration"]), SCHEMA, cfg, trials=1)
    memorise = {**backtest.params, "num_leaves": 64, "min_data_in_leaf": 2, "lambda_l2": 0.0, "learning_rate": 0.075,
                "feature_fraction": 1.0, "bagging_fraction": 1.0}
    backtest = dataclasses.replace(backtest, params=memorise, rounds=[800])
    choice = ModelChoice("blend", 0.75, Calibrator("sigmoid", np.array([0.0, 1.0]), np.array([0.0, 1.0])), {}, {})
    refit = refit_target(frame, y, np.ones(len(y), dtype=bool), SCHEMA, cfg.model_copy(update={
        "model_choice": cfg.model_choice.model_copy(update={"at_refit": False})}), split, Recency(), choice, backtest)
    models = refit.models
    assert models is not None and len(models.folds) == cfg.refit_calibration_folds
    fitted = frame.iloc[refit.rows.calibration]
    # every fitted lead is held out of exactly one fold
    held = np.concatenate([f.leads for f in models.folds])
    assert len(held) == len(set(held)) == fitted["lead_id"].nunique()
    kind, weight = "blend", 0.75
    oof = models.calibration_raw(fitted, kind, weight)
    np.testing.assert_allclose(models.held_out_raw(fitted, kind, weight), oof, rtol=1e-9)
    in_sample = models.raw(fitted, kind, weight)
    yc = y[refit.rows.calibration]
    assert np.corrcoef(in_sample, yc)[0, 1] > 0.5  # the shipped models memorised the leads they fitted ...
    assert abs(np.corrcoef(oof, yc)[0, 1]) < 0.2  # ... their held-out scores know nothing of them
    # in any order, mixed with leads the refit never fitted (scored by the shipped models)
    new, _ = _leads_without_signal(50, seed=99, start="2025-01-01")
    mixed = pd.concat([new, fitted.iloc[::-1]], ignore_index=True)
    scored = models.held_out_raw(mixed, kind, weight)
    np.testing.assert_allclose(scored[: len(new)], models.raw(new, kind, weight), rtol=1e-9)
    np.testing.assert_allclose(scored[len(new):], oof[::-1], rtol=1e-9)
    np.testing.assert_allclose(refit.held_out_probability(mixed), refit.model.calibrator(scored), rtol=1e-9)
    # the account calibrator scores with them, on the backtest's months; last_months: on its newest months
    no_backtest = cast("BoundBundle", None)  # not read when a refit ships
    via = shipped_scores(split, no_backtest, refit)
    assert via.scorer == "cross_fit" and via.fit == (split.validation_start, split.test_start)
    np.testing.assert_allclose(via.score(mixed), refit.held_out_probability(mixed), rtol=1e-9)
    sliced = dataclasses.replace(refit, rows=dataclasses.replace(refit.rows, scheme="last_months"))
    via = shipped_scores(split, no_backtest, sliced)
    assert via.scorer == "last_months" and via.fit == (refit.rows.calibration_start, refit.rows.end) and via.test is None
