"""The seed-averaged refit booster (training.seed_average): one LightGBM model scoring the mean log-odds.

The merged model must stand in for the boosters everywhere a bundle's booster is read: its raw score
and its per-feature contributions (the reasons) are the mean of the boosters', it survives the model
string, and with ``lightgbm.refit_seeds: 1`` the refit's final fit is exactly what it was.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from leadscore.training.config import LightGBMConfig, TrainingConfig
from leadscore.training.dask_fit import final_booster
from leadscore.training.seed_average import average_boosters, seed_params
from leadscore.training.tune import base_params, import_lightgbm, make_dataset

ROUNDS = 40
CAT = [4]


def _table(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    X[:, 4] = rng.integers(0, 6, n)
    logit = 1.1 * X[:, 0] - 0.7 * X[:, 1] * X[:, 2] + np.where(X[:, 4] == 2, 1.0, -0.3) - 1.2
    return X, (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float64)


def _params(cfg: TrainingConfig) -> dict[str, Any]:
    # every source of randomness on: row and column subsamples, random thresholds
    return {**base_params(cfg, seed=5), "learning_rate": 0.1, "num_leaves": 7, "min_data_in_leaf": 30,
            "feature_fraction": 0.7, "bagging_fraction": 0.7, "extra_trees": True}


def _fit(X: np.ndarray, y: np.ndarray, params: dict[str, Any], cfg: TrainingConfig) -> Any:
    return import_lightgbm().train(params, make_dataset(X, y, CAT, params={"max_bin": cfg.lightgbm.max_bin}), ROUNDS)


def test_the_average_scores_the_mean_log_odds_and_the_mean_contributions() -> None:
    X, y = _table()
    cfg = TrainingConfig()
    boosters = [_fit(X, y, seed_params(_params(cfg), i), cfg) for i in range(3)]
    raw = [b.predict(X, raw_score=True) for b in boosters]
    assert min(np.abs(raw[0] - r).max() for r in raw[1:]) > 0.05  # the seeds made different models
    merged = average_boosters(boosters)
    assert merged.num_trees() == 3 * ROUNDS
    np.testing.assert_allclose(merged.predict(X, raw_score=True), np.mean(raw, axis=0), atol=1e-10)
    np.testing.assert_allclose(merged.predict(X, pred_contrib=True),
                               np.mean([b.predict(X, pred_contrib=True) for b in boosters], axis=0), atol=1e-10)
    # what a bundle stores and the scorer loads
    loaded = import_lightgbm().Booster(model_str=merged.model_to_string())
    np.testing.assert_allclose(loaded.predict(X), merged.predict(X), atol=1e-12)
    assert average_boosters(boosters[:1]) is boosters[0]
    assert seed_params(_params(cfg), 0) == _params(cfg) and seed_params(_params(cfg), 2)["seed"] != 5


def test_refit_seeds_average_the_final_fit_and_one_seed_leaves_it_as_it_was() -> None:
    X, y = _table(seed=1)
    one = TrainingConfig()
    params = _params(one)
    single = final_booster(X, y, None, CAT, params, ROUNDS, one)
    np.testing.assert_array_equal(single.predict(X), _fit(X, y, params, one).predict(X))
    three = TrainingConfig(lightgbm=LightGBMConfig(refit_seeds=3))
    averaged = final_booster(X, y, None, CAT, params, ROUNDS, three)
    expected = np.mean([_fit(X, y, seed_params(params, i), one).predict(X, raw_score=True) for i in range(3)], axis=0)
    np.testing.assert_allclose(averaged.predict(X, raw_score=True), expected, atol=1e-10)
    # on rows it did not learn from, the average is at least as good as its members on average (log loss)
    X_new, y_new = _table(seed=2)
    p = averaged.predict(X_new)
    members = [_fit(X, y, seed_params(params, i), one).predict(X_new) for i in range(3)]

    def log_loss(q: np.ndarray) -> float:
        return float(-np.mean(y_new * np.log(q) + (1 - y_new) * np.log1p(-q)))

    assert log_loss(p) <= np.mean([log_loss(q) for q in members]) + 1e-9
