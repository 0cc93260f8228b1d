"""Refit row roles, recency weights, model choice, the logistic and blend bundle kinds, drift and the verdict.

Small synthetic frames (a few thousand rows, one or two LightGBM fits each): what is checked is the
logic, not a model's quality.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from leadscore.config import Settings
from leadscore.training.calibration import Calibrator
from leadscore.training.choice import Recency, choose_model
from leadscore.training.drift import drift_report, label_rate_by_month, outside_range, psi, verdict
from leadscore.training.linear import fit_linear, logit

SCHEMA = [{"name": "rid", "dtype": "float64", "group": "fit", "description": "", "template": "row {value}"},
          {"name": "x1", "dtype": "float64", "group": "interest", "description": "", "template": "x1 is {value}"},
          {"name": "x2", "dtype": "float64", "group": "interest", "description": "", "template": "x2 is {value}"},
          {"name": "source", "dtype": "str", "group": "fit", "description": "", "template": "from {value}",
           "missing": "source unknown"}]


def _linear_data(n: int, seed: int = 0, months: int = 12) -> tuple[pd.DataFrame, np.ndarray]:
    """A linear signal in log-odds; ``as_of`` spread over ``months`` months, oldest first."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    source = rng.choice(["ads", "referral", "organic"], n)
    z = -1.5 + 1.2 * x1 - 0.8 * x2 + 0.7 * (source == "referral")
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.float64)
    start = pd.Timestamp("2024-01-01", tz="UTC")
    as_of = pd.Series(start + pd.to_timedelta(np.sort(rng.uniform(0, months * 30.4, n)), unit="D"))
    frame = pd.DataFrame({"as_of": as_of, "rid": np.arange(n, dtype=np.float64), "x1": x1, "x2": x2,
                          "source": pd.Series(source, dtype="str")})
    return frame, y


# ------------------------------------------------------------------------------------------ recency


def test_recency_weights_halve_every_half_life_and_windows_cut_rows() -> None:
    end = pd.Timestamp("2024-07-01", tz="UTC")
    as_of = pd.Series(pd.to_datetime(["2024-07-01", "2024-04-01", "2024-01-01", "2023-07-01"], utc=True))
    assert Recency(None, None).weights(as_of, end) is None
    w = Recency(None, 3.0).weights(as_of, end)
    assert w is not None
    # ages 0, 3, 6, 12 months (calendar months are ~30.4 days: within a percent)
    np.testing.assert_allclose(w, [1.0, 0.5, 0.25, 0.0625], rtol=0.02)
    assert np.all(np.diff(w) < 0)
    rows = np.arange(4)
    np.testing.assert_array_equal(Recency(6, None).rows(rows, as_of, end), [0, 1, 2])
    np.testing.assert_array_equal(Recency(None, 3.0).rows(rows, as_of, end), rows)


def test_recency_search_finds_the_new_regime_with_six_probes(settings: Settings) -> None:
    """The sign of x1 flips four months before validation: a short window or fast decay must win,
    found by the coordinate search (every half-life on all history, then every window at the best)."""
    from leadscore.training.choice import choose_recency

    frame, y = _linear_data(12000, seed=3, months=14)
    as_of = frame["as_of"]
    flip = pd.Timestamp("2024-07-01", tz="UTC")
    end = pd.Timestamp("2024-11-01", tz="UTC")
    rng = np.random.default_rng(4)
    z = -1.5 + np.where(as_of < flip, -1.5, 1.5) * frame["x1"].to_numpy()
    y = (rng.random(len(y)) < 1 / (1 + np.exp(-z))).astype(np.float64)
    fit_rows, val_rows = np.flatnonzero(as_of < end), np.flatnonzero(as_of >= end)
    feats = [s for s in SCHEMA if s["name"] != "rid"]
    got = choose_recency(frame, y, fit_rows, val_rows, as_of, end, feats, settings.training, seed=0)
    probed = set(got.validation_log_loss)
    best_h = got.chosen.half_life_months
    assert {f"window all, decay {'none' if h is None else f'half-life {h:g} months'}"
            for h in (None, 3.0, 6.0, 12.0)} <= probed
    assert len(probed) <= 6, probed
    assert got.chosen != Recency(), got.validation_log_loss
    assert got.validation_log_loss[got.chosen.label] < got.validation_log_loss["window all, decay none"]
    assert best_h in (None, 3.0, 6.0, 12.0)
    # only the configured lists are probed: "no decay, all history" alone means no search
    plain = settings.training.model_copy(update={"recency": settings.training.recency.model_copy(
        update={"half_lives_months": [None], "windows_months": [None]})})
    assert choose_recency(frame, y, fit_rows, val_rows, as_of, end, feats, plain, seed=0).chosen == Recency()


def test_refit_recency_is_chosen_again_on_the_newest_months(settings: Settings) -> None:
    """``recency.at_refit``: a flip after the backtest's validation months is found by the refit's own
    choice (fitting the months before the newest, validating on them); off, the backtest's stays."""
    from leadscore.training.refit import refit_recency

    frame, _ = _linear_data(12000, seed=3, months=14)
    as_of = frame["as_of"]
    flip, cal_start = pd.Timestamp("2024-07-01", tz="UTC"), pd.Timestamp("2024-11-01", tz="UTC")
    z = -1.5 + np.where(as_of < flip, -1.5, 1.5) * frame["x1"].to_numpy()
    y = (np.random.default_rng(4).random(len(frame)) < 1 / (1 + np.exp(-z))).astype(np.float64)
    older, newest = np.flatnonzero(as_of < cal_start), np.flatnonzero(as_of >= cal_start)
    feats = [s for s in SCHEMA if s["name"] != "rid"]
    backtest = Recency()
    off = settings.training.model_copy(update={"recency": settings.training.recency.model_copy(
        update={"at_refit": False})})
    assert refit_recency(frame, y, older, newest, cal_start, feats, off, backtest) is backtest
    assert settings.training.recency.at_refit  # the default
    assert refit_recency(frame, y, older, newest, cal_start, feats, settings.training, backtest) != backtest


# ------------------------------------------------------------------------------------------ model choice


def test_logistic_wins_on_a_linear_signal_with_few_rows(settings: Settings) -> None:
    from leadscore.training.fit import RowSets, fit_target

    frame, y = _linear_data(3400, seed=1)
    feats = [s for s in SCHEMA if s["name"] != "rid"]
    rows = RowSets(fit=np.arange(0, 300), early_stop=np.arange(300, 900), calibration=np.arange(900, 3400))
    fit = fit_target(frame, y, rows, feats, settings.training, trials=2)
    linear = fit_linear(frame.iloc[rows.fit], y[rows.fit], feats)
    p_lin = linear.predict(frame.iloc[rows.calibration])
    cfg = settings.training.model_copy(update={"model_choice": settings.training.model_choice.model_copy(
        update={"candidates": ["lightgbm", "logistic"]})})
    two = choose_model(fit.raw["calibration"], p_lin, y[rows.calibration], cfg, seed=0)
    assert two.kind == "logistic", two.log_loss
    assert two.log_loss["logistic"] < two.log_loss["lightgbm"]
    every = choose_model(fit.raw["calibration"], p_lin, y[rows.calibration], settings.training, seed=0)
    assert every.kind != "lightgbm" and every.log_loss[every.kind if every.kind != "blend" else
                                                        f"blend {every.blend_weight:g}"] == min(every.log_loss.values())


def test_linear_model_contributions_add_up_and_row_path_matches(tmp_path: Path) -> None:
    frame, y = _linear_data(2000, seed=2)
    frame.loc[::7, "x1"] = np.nan
    frame.loc[::11, "source"] = None
    feats = SCHEMA[1:]
    model = fit_linear(frame, y, feats)
    contrib = model.contributions(frame)
    np.testing.assert_allclose(model.offset + contrib.sum(axis=1), model.logit(frame), atol=1e-9)
    np.testing.assert_allclose(contrib.mean(), 0.0, atol=1e-9)  # contributions are relative to the average row
    for i in (0, 7, 11):
        row = frame.iloc[i].to_dict()
        np.testing.assert_allclose(model.row_terms(row), model.terms(frame.iloc[[i]]).to_numpy()[0], atol=1e-12)
    coefs = {t.name: t for t in model.numeric}
    assert coefs["x1"].coef > 0 > coefs["x2"].coef
    assert coefs["x1"].missing_coef is not None and coefs["x2"].missing_coef is None


@pytest.mark.parametrize("kind", ["logistic", "blend"])
def test_logistic_and_blend_bundles_score_explain_and_round_trip(tmp_path: Path, kind: str) -> None:
    import lightgbm as lgb

    from leadscore.training.bundle import ScoringBundle, TargetModel
    from leadscore.training.encoding import encode_frame, fit_encodings

    frame, y = _linear_data(2000, seed=3)
    feats = SCHEMA[1:]
    linear = fit_linear(frame, y, feats)
    enc = fit_encodings(frame, feats)
    model_str = None
    if kind == "blend":
        X = encode_frame(frame, feats, enc)
        model_str = lgb.train({"objective": "binary", "verbosity": -1, "num_threads": 1, "seed": 0},
                              lgb.Dataset(X, y, categorical_feature=[2]), 20).model_to_string()
    cal = Calibrator("sigmoid", np.array([0.0, 0.5, 1.0]), np.array([0.0, 0.45, 1.0]))
    models = {"sql": TargetModel(model_str, enc, cal, kind=kind, linear=linear,  # type: ignore[arg-type]
                                 blend_weight=0.5 if kind == "blend" else None)}
    bundle = ScoringBundle(schema=feats, schema_hash="h", config_hash="c", models=models)  # type: ignore[arg-type]
    bundle.save(tmp_path / "b")
    assert (tmp_path / "b" / "model_sql.txt").exists() == (kind == "blend")
    loaded = ScoringBundle.load(tmp_path / "b").bind(schema_hash="h")
    assert loaded.models["sql"].kind == kind
    got = loaded.predict(frame)["p_sql"].to_numpy()
    np.testing.assert_allclose(got, bundle.bind(schema_hash="h").predict(frame)["p_sql"].to_numpy(), atol=0)
    if kind == "logistic":
        np.testing.assert_allclose(loaded.predict_raw(frame, "sql"), linear.predict(frame), atol=1e-12)
    row = frame.iloc[4].to_dict()
    assert loaded.predict_row(row)["p_sql"] == pytest.approx(got[4], abs=1e-9)
    contrib = loaded.contributions(frame.iloc[:50])
    np.testing.assert_allclose(contrib.sum(axis=1), logit(loaded.predict_raw(frame.iloc[:50], "sql")), atol=1e-6)
    details = loaded.reason_details(row, k=3)
    shown = {i["feature"]: i["contribution"] for side in details.values() for i in side}
    assert shown
    for feature, value in shown.items():  # the row path explains like the batch path
        assert value == pytest.approx(float(loaded.contributions(frame.iloc[[4]])[feature].iloc[0]), abs=1e-9)
    missing = loaded.reason_details({"x1": 0.0, "x2": 0.0, "source": None}, k=3)
    texts = {i["feature"]: i["text"] for side in missing.values() for i in side}
    assert texts.get("source", "source unknown") == "source unknown"
    with pytest.raises(ValueError, match="missing from the row"):
        loaded.predict_row({"x1": 1.0, "source": "ads"})


def test_a_format_1_bundle_still_loads_as_lightgbm(tmp_path: Path) -> None:
    import lightgbm as lgb

    from leadscore.training.bundle import ScoringBundle, TargetModel
    from leadscore.training.encoding import encode_frame, fit_encodings

    frame, y = _linear_data(800, seed=4)
    feats = SCHEMA[1:]
    enc = fit_encodings(frame, feats)
    booster = lgb.train({"objective": "binary", "verbosity": -1, "num_threads": 1},
                        lgb.Dataset(encode_frame(frame, feats, enc), y, categorical_feature=[2]), 10)
    cal = Calibrator.identity()
    ScoringBundle(schema=feats, schema_hash="h", config_hash="c",  # type: ignore[arg-type]
                  models={"sql": TargetModel(booster.model_to_string(), enc, cal)}).save(tmp_path / "b")
    doc = json.loads((tmp_path / "b" / "bundle.json").read_text())
    doc["format_version"] = 1
    for t in doc["targets"].values():  # what a format-1 bundle held
        for key in ("kind", "linear", "blend_weight"):
            t.pop(key)
    (tmp_path / "b" / "bundle.json").write_text(json.dumps(doc))
    old = ScoringBundle.load(tmp_path / "b").bind(schema_hash="h")
    assert old.models["sql"].kind == "lightgbm"
    np.testing.assert_allclose(old.predict_raw(frame, "sql"), booster.predict(encode_frame(frame, feats, enc)))


# ------------------------------------------------------------------------------------------ refit


def test_last_months_refit_never_fits_its_calibration_rows(settings: Settings) -> None:
    from leadscore.training.choice import ModelChoice
    from leadscore.training.fit import RowSets, fit_target
    from leadscore.training.refit import refit_target
    from leadscore.training.split import TimeSplit

    frame, y = _linear_data(3000, seed=5, months=12)
    # the recency as given: with ``recency.at_refit`` (the default) the newest months *validate* the
    # refit's recency choice, so flipping their labels may change the fit's weights (a choice, not a fit)
    cfg = settings.training.model_copy(update={"refit": "last_months", "recency": settings.training.recency
                                               .model_copy(update={"at_refit": False})})
    feats = SCHEMA[1:]
    as_of = frame["as_of"]
    m = pd.Timestamp("2024-01-01", tz="UTC")
    edge = [m + pd.DateOffset(months=k) for k in (0, 6, 8, 10, 12)]
    split = TimeSplit("sql", 30, *edge)
    per = {p: np.flatnonzero(split.mask(as_of, p)) for p in ("train", "validation", "calibration", "test")}
    backtest = fit_target(frame, y, RowSets(per["train"], per["validation"], per["calibration"]), feats, cfg,
                          trials=1)
    choice = ModelChoice("blend", 0.5, backtest.calibrator, {}, {})
    labelled = np.ones(len(y), dtype=bool)
    first = refit_target(frame, y, labelled, feats, cfg, split, Recency(None, 6.0), choice, backtest)
    cal_start = split.test_end - pd.DateOffset(months=cfg.split.calibration_months)
    assert first.rows.calibration_start == cal_start and first.rows.end == split.test_end
    assert not set(first.rows.fit) & set(first.rows.calibration)
    assert (as_of.iloc[first.rows.fit] < cal_start).all() and (as_of.iloc[first.rows.calibration] >= cal_start).all()
    # the newest months are the calibration slice; every older matured month fits (test months included)
    assert set(first.rows.fit) | set(first.rows.calibration) == set(range(len(y)))
    # flipping every calibration label changes the calibration map, never the fitted models
    flipped = y.copy()
    flipped[first.rows.calibration] = 1 - flipped[first.rows.calibration]
    second = refit_target(frame, flipped, labelled, feats, cfg, split, Recency(None, 6.0), choice, backtest)
    assert first.model.model_str == second.model.model_str
    assert first.model.linear == second.model.linear
    assert not np.allclose(first.model.calibrator(np.array([0.2])), second.model.calibrator(np.array([0.2])))
    assert first.window()["calibration_months"] == ["2024-11", "2024-12"]


def _leads_without_signal(n_leads: int, seed: int, start: str) -> tuple[pd.DataFrame, np.ndarray]:
    """Leads with 4 moments each in one month from ``start``, a label per lead that no feature predicts, and
    a feature (``rid``) that names the lead: a model can only learn the leads it has seen."""
    rng = np.random.default_rng(seed)
    lead = np.repeat(np.arange(n_leads), 4)
    y = np.repeat((rng.random(n_leads) < 0.3).astype(np.float64), 4)
    days = np.repeat(rng.uniform(0, 26, n_leads), 4) + np.tile(np.arange(4), n_leads)
    frame = pd.DataFrame({"as_of": pd.Timestamp(start, tz="UTC") + pd.to_timedelta(days, unit="D"),
                          "lead_id": [f"{start}-{i}" for i in lead], "rid": (lead + seed * 100_000).astype(np.float64),
                          "x1": rng.normal(size=len(lead)), "x2": rng.normal(size=len(lead)),
                          "source": pd.Series(rng.choice(["ads", "referral"], len(lead)), dtype="str")})
    return frame, y


def test_cross_fit_refit_fits_every_month_and_calibrates_on_leads_its_fold_models_never_saw(
    settings: Settings,
) -> None:
    """The default refit fits every month; its map sees out-of-fold scores of every fitting row, grouped by lead.

    On labels no feature predicts, a booster free to memorise leads scores the leads it was fitted on
    with confidence. A map fitted on those in-sample scores (or on folds that split a lead's moments)
    would be steep, and new leads would get confident, wrong scores; out-of-fold by lead, the map is
    flat and new leads get the base rate."""
    import dataclasses

    from leadscore.training.choice import ModelChoice
    from leadscore.training.encoding import encode_frame
    from leadscore.training.fit import RowSets, fit_target
    from leadscore.training.refit import refit_target
    from leadscore.training.split import TimeSplit

    # the backtest's choice kept (at_refit off): this test is about the trees' map
    cfg = settings.training.model_copy(update={"refit": "cross_fit", "model_choice": settings.training.model_choice
                                               .model_copy(update={"at_refit": False})})
    months = [f"2024-{m:02d}-01" for m in range(1, 13)]
    parts = [_leads_without_signal(150, seed=k + 1, start=m) for k, m in enumerate(months)]
    frame = pd.concat([p[0] for p in parts], ignore_index=True)
    y = np.concatenate([p[1] for p in parts])
    edge = [pd.Timestamp(m, tz="UTC") for m in ("2024-01-01", "2024-07-01", "2024-09-01", "2024-11-01")]
    split = TimeSplit("sql", 30, *edge, pd.Timestamp("2025-01-01", tz="UTC"))
    per = {p: np.flatnonzero(split.mask(frame["as_of"], p)) for p in ("train", "validation", "calibration")}
    feats = SCHEMA
    backtest = fit_target(frame, y, RowSets(per["train"], per["validation"], per["calibration"]), feats, cfg, trials=1)
    # a booster that memorises: small leaves, many rounds, no regularisation (the refit boosts at 4x the
    # final learning rate for a quarter of the rounds: 0.3 for 300 rounds)
    memorise = {**backtest.params, "num_leaves": 64, "min_data_in_leaf": 2, "lambda_l2": 0.0, "learning_rate": 0.075,
                "feature_fraction": 1.0, "bagging_fraction": 1.0}
    backtest = dataclasses.replace(backtest, params=memorise, rounds=[1200])
    choice = ModelChoice("lightgbm", None, Calibrator("sigmoid", np.array([0.0, 1.0]), np.array([0.0, 1.0])), {}, {})
    refit = refit_target(frame, y, np.ones(len(y), dtype=bool), feats, cfg, split, Recency(), choice, backtest)
    assert refit.rows.scheme == "cross_fit" and refit.window()["scheme"] == "cross_fit"
    assert refit.model.params["learning_rate"] == pytest.approx(0.3) and refit.model.params["num_iterations"] == 300
    # every matured month fits, the newest two included; every fitting row calibrates (out of fold)
    assert set(refit.rows.fit) == set(range(len(y))) and np.array_equal(refit.rows.calibration, refit.rows.fit)
    assert refit.rows.calibration_start == pd.Timestamp("2024-11-01", tz="UTC")
    assert refit.window()["fit_months"][-1] == "2024-12"
    assert refit.window()["calibration_months"] == refit.window()["fit_months"]
    booster = refit.model.booster
    seen = booster.predict(encode_frame(frame.iloc[refit.rows.calibration], feats, refit.model.encodings))
    assert np.corrcoef(seen, y[refit.rows.calibration])[0, 1] > 0.9  # it did memorise the leads it saw
    new, y_new = _leads_without_signal(400, seed=99, start="2025-01-01")
    p = refit.model.calibrator(booster.predict(encode_frame(new, feats, refit.model.encodings)))
    base = y[refit.rows.calibration].mean()
    assert np.std(p) < 0.05 and abs(np.mean(p) - base) < 0.02

    def loss(q: np.ndarray) -> float:
        return float(-np.mean(y_new * np.log(q) + (1 - y_new) * np.log(1 - q)))

    assert loss(p) < loss(np.full(len(p), base)) + 0.01
    # the contrast: the same map fitted on the shipped booster's in-sample scores is steep and costs dearly
    from leadscore.training.calibration import fit_sigmoid

    steep = fit_sigmoid(seen, y[refit.rows.calibration])(booster.predict(encode_frame(new, feats,
                                                                                      refit.model.encodings)))
    assert np.std(steep) > 0.2 and loss(np.clip(steep, 1e-6, 1 - 1e-6)) > loss(p) + 0.2
    # choosing the kind again on the refit's out-of-fold scores (the default), the memorising trees lose to
    # the logistic model, which cannot learn the leads, and the refit says so
    again = refit_target(frame, y, np.ones(len(y), dtype=bool), feats, settings.training.model_copy(
        update={"refit": "cross_fit"}), split, Recency(), choice, backtest)
    assert again.choice is not None and again.choice.kind == "logistic" and again.model.kind == "logistic"
    assert again.model.model_str is None and again.model.linear is not None
    assert again.choice.log_loss["logistic"] < again.choice.log_loss["lightgbm"]


def test_cross_fit_map_targets_the_fits_recency_weighted_level_not_the_newest_months_alone(
    settings: Settings,
) -> None:
    """A lift in the newest two months that no feature explains (the stock of open leads converting
    after a new offer, then fading) is not carried to the months after them: the map is fitted on every
    fitting row's out-of-fold score with the fit's recency weights, so its level is the one the recency
    choice validated. A map on the newest months alone (the scheme before) applies their rate to every
    later month; a short half-life moves the level towards the newest months, as the weights say."""
    from leadscore.training.calibration import fit_sigmoid
    from leadscore.training.choice import ModelChoice
    from leadscore.training.encoding import encode_frame
    from leadscore.training.fit import RowSets, fit_target
    from leadscore.training.refit import RefitRows, refit_models, refit_target
    from leadscore.training.split import TimeSplit

    # the backtest's choice kept (at_refit off; on these linear data the refit would ship the logistic model),
    # and the recency as given (the refit's own choice would follow the lift: this test is about the map)
    cfg = settings.training.model_copy(update={"refit": "cross_fit", "model_choice": settings.training.model_choice
                                               .model_copy(update={"at_refit": False}),
                                               "recency": settings.training.recency.model_copy(
                                                   update={"at_refit": False})})
    feats = SCHEMA[1:]
    frame, _ = _linear_data(8000, seed=11, months=12)
    cal_start = pd.Timestamp("2024-11-01", tz="UTC")
    newest = np.asarray(frame["as_of"] >= cal_start)

    def z(f: pd.DataFrame) -> np.ndarray:
        return np.asarray(-1.5 + 1.2 * f["x1"] - 0.8 * f["x2"] + 0.7 * (f["source"] == "referral"))

    rng = np.random.default_rng(3)
    y = (rng.random(len(frame)) < 1 / (1 + np.exp(-(z(frame) + 1.5 * newest)))).astype(np.float64)
    later, _ = _linear_data(4000, seed=12, months=1)
    base = float(np.mean(1 / (1 + np.exp(-z(later)))))  # what the months after the lift convert at
    assert y[newest].mean() > base + 0.15
    edge = [pd.Timestamp(m, tz="UTC") for m in ("2024-01-01", "2024-07-01", "2024-09-01", "2024-11-01", "2025-01-01")]
    split = TimeSplit("sql", 30, *edge)
    per = {p: np.flatnonzero(split.mask(frame["as_of"], p)) for p in ("train", "validation", "calibration")}
    backtest = fit_target(frame, y, RowSets(per["train"], per["validation"], per["calibration"]), feats, cfg, trials=1)
    choice = ModelChoice("lightgbm", None, Calibrator("sigmoid", np.array([0.0, 1.0]), np.array([0.0, 1.0])), {}, {})
    level = {}
    for name, recency in (("plain", Recency()), ("decay", Recency(None, 1.0))):
        refit = refit_target(frame, y, np.ones(len(y), dtype=bool), feats, cfg, split, recency, choice, backtest)
        raw = refit.model.booster.predict(encode_frame(later, feats, refit.model.encodings))
        level[name] = float(np.mean(refit.model.calibrator(raw)))
    # all history, no decay: the level of all months (10 plain, 2 lifted), far from the lifted months' rate
    assert abs(level["plain"] - base) < 0.06 < y[newest].mean() - level["plain"]
    # a one-month half-life weighs the newest months most: the level follows
    assert level["decay"] > level["plain"] + 0.03
    # the contrast: the same out-of-fold scores, a map on the newest months only, over-predicts the later months
    rows = RefitRows.of(np.flatnonzero(~newest), np.flatnonzero(newest), frame["as_of"], cal_start, edge[-1],
                        "cross_fit")
    models = refit_models(frame, y, rows, feats, cfg, Recency(), backtest, linear=False)
    oof = models.calibration_raw(frame.iloc[rows.calibration], "lightgbm", None)
    only_newest = fit_sigmoid(oof[newest[rows.calibration]], y[rows.calibration][newest[rows.calibration]])
    assert float(np.mean(only_newest(models.raw(later, "lightgbm", None)))) > base + 0.1


# ------------------------------------------------------------------------------------------ drift


def test_psi_on_known_distributions() -> None:
    from scipy.stats import norm

    rng = np.random.default_rng(0)
    ref, same, moved = rng.normal(size=200_000), rng.normal(size=200_000), rng.normal(1.0, 1.0, size=200_000)
    assert psi(ref, same) < 0.002
    edges = norm.ppf(np.linspace(0, 1, 11)[1:-1])
    q = np.diff(np.concatenate([[0.0], norm.cdf(edges - 1.0), [1.0]]))
    expected = float(np.sum((q - 0.1) * np.log(q / 0.1)))
    assert psi(ref, moved) == pytest.approx(expected, rel=0.03)
    # two categories, 50/50 → 90/10: (0.4)ln(1.8) + (0.4)ln(5)
    a = pd.Series(["a", "b"] * 5000)
    b = pd.Series(["a"] * 9000 + ["b"] * 1000)
    assert psi(a, b, categorical=True) == pytest.approx(0.4 * np.log(1.8) + 0.4 * np.log(5), rel=1e-3)
    assert outside_range(rng.uniform(0, 1, 10_000), rng.uniform(0, 2, 10_000)) == pytest.approx(0.5, abs=0.02)
    assert outside_range(a, pd.Series(["a", "c", None, "c"]), categorical=True) == pytest.approx(2 / 3)


def test_drift_report_ranks_the_moved_feature_first_and_the_verdict_names_it() -> None:
    frame, y = _linear_data(4000, seed=6)
    late = np.flatnonzero(frame["as_of"] >= pd.Timestamp("2024-10-01", tz="UTC"))
    frame.loc[late, "x2"] += 3.0
    early = np.flatnonzero(frame["as_of"] < pd.Timestamp("2024-07-01", tz="UTC"))
    y[late] = (np.random.default_rng(0).random(len(late)) < 0.6).astype(float)
    rates = {"sql": label_rate_by_month(frame["as_of"], y)}
    drift = drift_report(frame, SCHEMA[1:], early, late, rates)
    assert drift["features"][0]["feature"] == "x2" and drift["features"][0]["psi"] > 1.0
    assert drift["features"][0]["outside_range"] > 0.3
    assert drift["scoring_months"] == ["2024-10", "2024-11", "2024-12"]
    assert set(drift["label_rate"]["sql"]) == {f"2024-{m:02d}" for m in range(1, 13)}
    ok, line = verdict("sql", "lightgbm", 0.48, 0.65, drift, k=2)
    assert not ok and "\n" not in line
    assert line.startswith("sql: the shipped lightgbm model does not beat the rule score on the test months")
    assert "x2 (PSI" in line and "outside range" in line and "label rate" in line
    assert "not recommended for promotion" in line
    ok, line = verdict("sql", "blend", 0.55, 0.50, drift)
    assert ok and "beats the rule score" in line
    assert verdict("sql", "lightgbm", 0.49, 0.40, drift)[1].count("does not beat chance") == 1


def test_a_refit_choosing_another_kind_reports_that_kinds_backtest_figures() -> None:
    """``model_choice.at_refit`` may register another kind than the backtest chose: train's table, its
    summary, the verdict and the bundle's record then name the registered kind, and ``shipped``'s
    figures (and the share of ceiling lift) are that kind's backtest, not the other kind's."""
    from types import SimpleNamespace

    from leadscore.training.backtest import SHIPPED, TargetResult, candidate_key
    from leadscore.training.choice import ModelChoice
    from leadscore.training.metrics import MetricCI

    def auc(v: float) -> dict[str, MetricCI]:
        return {"roc_auc": MetricCI(v, v - 0.01, v + 0.01)}

    flat = Calibrator("sigmoid", np.array([0.0, 1.0]), np.array([0.0, 1.0]))
    trees, blend = ModelChoice("lightgbm", None, flat, {}, {}), ModelChoice("blend", 0.75, flat, {}, {})
    metrics = {SHIPPED: auc(0.70), candidate_key("blend 0.75"): auc(0.75), "ground_truth": auc(0.90)}
    r = TargetResult(target="sql", split=None, fit=None, model=None, metrics=metrics, rows={}, positives={},  # type: ignore[arg-type]
                     capacity_share=0.1, recency=SimpleNamespace(chosen=Recency(), validation_log_loss={}), choice=trees,  # type: ignore[arg-type]
                     fit_rows=np.arange(3), share_of_ceiling_lift=0.5)
    r.adopt_refit_choice()  # no refit: the backtest's kind and figures stay
    assert r.shipped_choice is trees and r.metrics[SHIPPED]["roc_auc"].value == 0.70
    r.refit = SimpleNamespace(choice=blend, window=lambda: {})  # type: ignore[assignment]
    r.adopt_refit_choice()
    assert r.shipped_choice is blend and r.metrics[SHIPPED]["roc_auc"].value == 0.75
    assert r.share_of_ceiling_lift == pytest.approx((0.75 - 0.5) / (0.90 - 0.5))
    record = r.model_record()
    assert record["kind"] == "blend" and record["blend_weight"] == 0.75 and record["backtest_kind"] == "lightgbm"
