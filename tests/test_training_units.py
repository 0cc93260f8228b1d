"""Fast checks of the training building blocks: metrics, calibration, time splits, encoding, bundle I/O."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from leadscore.training.calibration import Calibrator, fit_calibrator
from leadscore.training.config import MinimumsConfig, SplitConfig
from leadscore.training.encoding import encode_frame, fit_encodings
from leadscore.training.metrics import evaluate_metrics
from leadscore.training.split import InsufficientDataError, check_minimums, stratified_time_sample, time_split


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=0, max_value=10_000), st.integers(min_value=5, max_value=60))
def test_metrics_match_scikit_learn_with_ties(seed: int, levels: int) -> None:
    rng = np.random.default_rng(seed)
    p = np.round(rng.beta(1, 8, 500) * levels) / levels  # many ties, like a points score
    p = np.clip(p, 0.001, 0.999)
    y = (rng.random(500) < p).astype(float)
    y[:2] = [0, 1]
    m = evaluate_metrics(y, p, n_boot=0)
    assert m["roc_auc"].value == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert m["pr_auc"].value == pytest.approx(average_precision_score(y, p), abs=1e-12)
    assert m["log_loss"].value == pytest.approx(log_loss(y, p), abs=1e-9)
    assert m["brier"].value == pytest.approx(brier_score_loss(y, p), abs=1e-12)


def test_bootstrap_interval_covers_point_and_lift_and_recall_make_sense() -> None:
    rng = np.random.default_rng(1)
    p = rng.beta(1, 10, 20_000)
    y = (rng.random(20_000) < p).astype(float)
    m = evaluate_metrics(y, p, capacity_share=0.2, n_boot=100)
    for ci in m.values():
        assert ci.lo <= ci.value <= ci.hi
    assert m["top_decile_lift"].value > 2
    assert 0.2 < m["recall_at_capacity"].value < 1
    assert m["ece"].value < 0.01  # p is the true probability
    shuffled = evaluate_metrics(y, rng.permutation(p), n_boot=0)
    assert abs(shuffled["roc_auc"].value - 0.5) < 0.03


def test_calibrator_fixes_overconfident_scores_and_roundtrips() -> None:
    rng = np.random.default_rng(2)
    true = rng.beta(1, 12, 6000)
    raw = np.clip(true * 3, 0, 0.99)  # 3x overconfident
    y = (rng.random(6000) < true).astype(float)
    cal, scores = fit_calibrator(raw[:3000], y[:3000], min_isotonic_rows=1000)
    assert cal.method in ("sigmoid", "isotonic") and set(scores) == {"identity", "sigmoid", "isotonic"}
    assert scores[cal.method] == min(scores["sigmoid"], scores["isotonic"]) < scores["identity"]
    assert abs(cal(raw[3000:]).mean() - y[3000:].mean()) < 0.01  # holds on rows it never saw
    assert np.all(np.diff(cal(np.linspace(0, 1, 101))) >= 0)  # monotone
    again = Calibrator.from_dict(cal.to_dict())
    np.testing.assert_array_equal(again(raw), cal(raw))
    small, small_scores = fit_calibrator(raw[:500], y[:500], min_isotonic_rows=1000)
    assert small.method == "sigmoid" and "isotonic" not in small_scores  # isotonic needs >= 1000 rows
    with pytest.raises(ValueError, match="one class"):
        fit_calibrator(raw[:100], np.zeros(100))


def _leads(n_leads: int, seed: int, moments: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Calibrated raw scores of leads with ``moments`` moments each: one label per lead, nearly one score."""
    rng = np.random.default_rng(seed)
    true = 1 / (1 + np.exp(-(-3 + 1.5 * rng.normal(size=n_leads))))
    y = np.repeat((rng.random(n_leads) < true).astype(float), moments)
    p = np.repeat(true, moments) * np.exp(rng.normal(0, 0.02, n_leads * moments))
    return p, y, np.repeat(np.arange(n_leads), moments)


def test_calibration_method_is_chosen_on_folds_that_keep_a_lead_together() -> None:
    """Folds that split a lead's moments hand isotonic the held-out rows' own leads (same label, nearly
    the same score): it looks better than it is and wins; by lead the choice is sigmoid, which is also
    the better map on leads neither saw."""
    from sklearn.metrics import log_loss

    p, y, leads = _leads(1500, seed=0)
    split_leads, split_scores = fit_calibrator(p, y, 1000, seed=0)
    by_lead, lead_scores = fit_calibrator(p, y, 1000, seed=0, groups=leads)
    assert split_leads.method == "isotonic" and by_lead.method == "sigmoid"
    assert lead_scores["isotonic"] > split_scores["isotonic"] + 0.01  # the optimism folds by lead remove
    p_new, y_new, _ = _leads(1500, seed=1)
    assert log_loss(y_new, by_lead(p_new)) < log_loss(y_new, split_leads(p_new))


def _as_of(months: int, per_month: int = 50) -> pd.Series:
    start = pd.Timestamp("2025-01-01", tz="UTC")
    days = np.repeat(np.arange(months) * 30.4, per_month) + np.tile(np.linspace(0, 29, per_month), months)
    return pd.Series(start + pd.to_timedelta(days, unit="D"))


def test_time_split_uses_matured_months_only_and_in_order() -> None:
    as_of = _as_of(14)
    cutoff = pd.Timestamp("2026-03-01", tz="UTC")
    s = time_split(as_of, cutoff, 30, SplitConfig(), "sql")
    assert s.test_end == pd.Timestamp("2026-01-01", tz="UTC")  # Jan's horizon ends after the cut-off
    assert s.months("test") == ["2025-11", "2025-12"]
    assert s.months("calibration") == ["2025-09", "2025-10"]
    assert s.months("validation") == ["2025-07", "2025-08"]
    assert s.months("train")[0] == "2025-01" and s.months("train")[-1] == "2025-06"
    masks = [s.mask(as_of, p) for p in ("train", "validation", "calibration", "test")]
    assert not np.any(np.sum(masks, axis=0) > 1)  # disjoint
    roundtrip = type(s).from_dict(s.to_dict())
    assert roundtrip == s


def test_too_short_history_and_minimums_name_what_is_missing() -> None:
    with pytest.raises(InsufficientDataError, match=r"rule-based score stays in force"):
        time_split(_as_of(6), pd.Timestamp("2025-07-15", tz="UTC"), 90, SplitConfig(), "opportunity")
    s = time_split(_as_of(14), pd.Timestamp("2026-03-01", tz="UTC"), 30, SplitConfig(), "sql")
    with pytest.raises(InsufficientDataError) as info:
        check_minimums(np.array([0.0] * 900 + [1.0] * 20), s, MinimumsConfig())
    msg = str(info.value)
    assert "920 matured moments (need at least 1000)" in msg and "20 positives (need at least 120)" in msg


def test_stratified_sample_keeps_month_shares() -> None:
    as_of = pd.concat([_as_of(3, 100), _as_of(3, 900).iloc[::3]]).reset_index(drop=True)
    idx = stratified_time_sample(as_of, 200, seed=0)
    assert len(idx) == pytest.approx(200, abs=5)
    full = as_of.dt.month.value_counts(normalize=True).sort_index()
    sample = as_of.iloc[idx].dt.month.value_counts(normalize=True).sort_index()
    np.testing.assert_allclose(sample.to_numpy(), full.to_numpy(), atol=0.02)
    np.testing.assert_array_equal(idx, stratified_time_sample(as_of, 200, seed=0))


def test_encoding_unknown_and_missing_become_nan_and_bad_numbers_are_named() -> None:
    schema = [{"name": "source", "dtype": "str"}, {"name": "n", "dtype": "float64"}]
    train = pd.DataFrame({"source": ["web"] * 10 + ["ads"] * 6 + ["rare"], "n": np.arange(17.0)})
    enc = fit_encodings(train, schema)
    assert enc["source"] == ["web", "ads"]  # most frequent first, rare values dropped
    X = encode_frame(pd.DataFrame({"source": ["ads", "new", None], "n": [1.0, None, 3.0]}), schema, enc)
    np.testing.assert_array_equal(np.isnan(X), [[False, False], [True, True], [True, False]])
    with pytest.raises(ValueError, match="'n' must be numeric"):
        encode_frame(pd.DataFrame({"source": ["web"], "n": ["lots"]}), schema, enc)
    with pytest.raises(ValueError, match="missing column"):
        encode_frame(pd.DataFrame({"n": [1.0]}), schema, enc)


def test_bundle_roundtrip_fast_path_and_reasons(tmp_path: Path) -> None:
    import lightgbm as lgb

    from leadscore.training.bundle import SchemaMismatchError, ScoringBundle, TargetModel

    rng = np.random.default_rng(3)
    schema = [
        {"name": "source", "dtype": "str", "group": "fit", "description": "", "template": "Came from {value}",
         "missing": "Lead source not known"},
        {"name": "n_demo", "dtype": "float64", "group": "interest", "description": "",
         "template": "{value} demo requests"},
    ]
    frame = pd.DataFrame({"source": rng.choice(["web", "ads", "event"], 3000), "n_demo": rng.poisson(1, 3000) * 1.0})
    y = (rng.random(3000) < 0.05 + 0.1 * frame["n_demo"].clip(0, 3) / 3 + 0.1 * (frame["source"] == "event")).astype(int)
    enc = fit_encodings(frame, schema)
    X = encode_frame(frame, schema, enc)
    models = {}
    for t in ("sql", "opportunity"):
        b = lgb.train({"objective": "binary", "verbosity": -1, "num_threads": 1, "seed": 0},
                      lgb.Dataset(X, y, categorical_feature=[0]), 30)
        models[t] = TargetModel(b.model_to_string(), enc, Calibrator("sigmoid", np.array([0, 0.5, 1.0]),
                                                                     np.array([0.0, 0.4, 1.0])))
    bundle = ScoringBundle(schema=schema, schema_hash="h", config_hash="c", models=models).bind(schema_hash="h")
    bundle.save(tmp_path / "b")
    loaded = ScoringBundle.load(tmp_path / "b").bind(schema_hash="h")
    pd.testing.assert_frame_equal(loaded.predict(frame), bundle.predict(frame))
    row = {"source": "event", "n_demo": 3.0}
    fast = loaded.predict_row(row)
    batch = loaded.predict(pd.DataFrame([row])).iloc[0]
    assert fast["p_sql"] == pytest.approx(batch["p_sql"], abs=1e-12)
    contrib = loaded.contributions(pd.DataFrame([row]))
    assert list(contrib.columns) == ["source", "n_demo", "bias"]
    reasons = loaded.reasons(row, k=2)
    assert "3 demo requests" in reasons["positive"] or "Came from event" in reasons["positive"]
    # a missing value is explained by the schema's sentence for it, never as "Came from none"
    unknown = loaded.reason_details({"source": None, "n_demo": 0.0}, k=2)
    texts = {i["feature"]: i["text"] for side in unknown.values() for i in side}
    assert texts.get("source") == "Lead source not known" and not any("none" in t for t in texts.values())
    with pytest.raises(SchemaMismatchError, match=r"feature schema h, .* schema other"):
        ScoringBundle.load(tmp_path / "b").bind(schema_hash="other")


def test_moment_weights_undo_the_sampling_bias_of_the_calibration_map() -> None:
    """A sample that keeps every positive but one negative in four (each standing for four, as a capped
    lead's moments stand for their strata) has 3-4x the population's label rate. Unweighted, the map
    learns the sample's level; weighted, the population's, which is what production scores."""
    rng = np.random.default_rng(5)
    true = 1 / (1 + np.exp(-(-3.5 + rng.normal(size=40_000))))
    y = (rng.random(40_000) < true).astype(float)
    kept = (y == 1) | (rng.random(40_000) < 0.25)
    w = np.where(y[kept] == 1, 1.0, 4.0)
    plain, _ = fit_calibrator(true[kept], y[kept], 1000, seed=0)
    weighted, scores = fit_calibrator(true[kept], y[kept], 1000, seed=0, weights=w)
    assert plain(true).mean() > 2.5 * y.mean()  # the sample's level
    assert abs(weighted(true).mean() - y.mean()) < 0.1 * y.mean()  # the population's
    assert scores["identity"] < scores["sigmoid"] + 0.002  # the raw score is calibrated for the population
    # weighting a row by 4 is fitting it four times (sigmoid: the same likelihood)
    from leadscore.training.calibration import fit_sigmoid

    rep = np.repeat(np.arange(kept.sum()), w.astype(int))
    np.testing.assert_allclose(fit_sigmoid(true[kept], y[kept], w)(true[:100]),
                               fit_sigmoid(true[kept][rep], y[kept][rep])(true[:100]), rtol=1e-3)


def test_refit_map_weights_are_recency_times_moment_weights() -> None:
    from leadscore.features.moments import WEIGHT_COLUMN, moment_weights
    from leadscore.training.choice import Recency
    from leadscore.training.config import TrainingConfig
    from leadscore.training.refit import RefitRows

    as_of = _as_of(6, per_month=4)
    frame = pd.DataFrame({"as_of": as_of, WEIGHT_COLUMN: np.arange(len(as_of), dtype=float) % 3 + 1})
    cal_start = pd.Timestamp(as_of.iloc[12])
    rows = RefitRows.of(np.arange(12), np.arange(12, 24), as_of, cal_start, as_of.iloc[-1], "cross_fit")
    decay, on, off = Recency(None, 2.0), TrainingConfig(moment_weights="maps"), TrainingConfig(moment_weights="none")
    m = moment_weights(frame)
    np.testing.assert_allclose(rows.calibration_weights(frame, decay, on), decay.weights(as_of, cal_start) * m)
    np.testing.assert_allclose(rows.calibration_weights(frame, Recency(), on), m)
    assert rows.calibration_weights(frame, Recency(), off) is None
    np.testing.assert_allclose(rows.calibration_weights(frame, decay, off), decay.weights(as_of, cal_start))
    # a flat table has no moment weights: each row is one scored moment
    np.testing.assert_allclose(rows.calibration_weights(frame[["as_of"]], Recency(), on), np.ones(24))
    # the models' fitting rows carry the moment weights only with ``fit``
    from leadscore.training.calibration import fit_weights

    d = decay.weights(as_of, cal_start)
    assert fit_weights(frame, None, on) is None and fit_weights(frame, d, on) is d
    both = TrainingConfig(moment_weights="fit")
    np.testing.assert_allclose(fit_weights(frame, d, both), d * m)
    np.testing.assert_allclose(fit_weights(frame, None, both), m)


def test_extra_trees_fixed_or_tuned() -> None:
    """``lightgbm.extra_trees``: a fixed parameter of every trial, or a choice the search makes."""
    import optuna

    from leadscore.training.config import LightGBMConfig, TrainingConfig
    from leadscore.training.tune import suggest_params

    trial = optuna.trial.FixedTrial({"learning_rate": 0.1, "num_leaves": 8, "min_data_in_leaf": 100,
                                     "feature_fraction": 0.5, "bagging_fraction": 0.8, "lambda_l2": 1.0,
                                     "cat_smooth": 10.0, "extra_trees": True})
    tuned = suggest_params(trial, TrainingConfig(lightgbm=LightGBMConfig(extra_trees="tune")))
    assert tuned["extra_trees"] is True
    assert "extra_trees" not in suggest_params(trial, TrainingConfig(lightgbm=LightGBMConfig(extra_trees=True)))


def test_refit_rounds_scale_with_the_row_ratio() -> None:
    """``lightgbm.refit_rounds_exponent``: the refit boosts the backtest's rounds times the row ratio to the
    exponent (0: as many; the cross-fitted scheme then scales them to the tuned learning rate)."""
    from types import SimpleNamespace

    from leadscore.training.config import LightGBMConfig, TrainingConfig
    from leadscore.training.refit import refit_boosting

    backtest = SimpleNamespace(rounds=[100], params={"learning_rate": 0.025}, rows=SimpleNamespace(fit=np.arange(1000)))
    plain = TrainingConfig()
    assert refit_boosting(backtest, plain, "last_months", 4000) == ({"learning_rate": 0.025}, 100)  # type: ignore[arg-type]
    params, rounds = refit_boosting(backtest, plain, "cross_fit", 4000)  # type: ignore[arg-type]
    assert (params["learning_rate"], rounds) == (pytest.approx(0.1), 25)
    fewer = TrainingConfig(lightgbm=LightGBMConfig(refit_rounds_exponent=-0.5))
    assert refit_boosting(backtest, fewer, "last_months", 4000)[1] == 50  # type: ignore[arg-type]
    assert refit_boosting(backtest, fewer, "last_months", 800)[1] == 100  # type: ignore[arg-type]  # fewer rows: as many
    more = TrainingConfig(lightgbm=LightGBMConfig(refit_rounds_exponent=0.5))
    assert refit_boosting(backtest, more, "cross_fit", 4000)[1] == 50  # type: ignore[arg-type]
