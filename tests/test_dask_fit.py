"""The distributed final fit (training.dask_fit) on a two-worker local cluster.

The cluster's workers are real processes on loopback (``server`` tier: ``make test`` runs it,
``make test-fast`` does not); the table is small, so the module takes seconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from leadscore.training.config import DaskTrainingConfig, TrainingConfig
from leadscore.training.dask_fit import (
    DaskFitError,
    DaskFitTimeout,
    final_booster,
    fit_booster_dask,
    use_dask,
)
from leadscore.training.tune import base_params

pytestmark = pytest.mark.server

ROUNDS = 60


def _table(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Numeric features, one categorical code column, a logistic label and decay-like weights."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6))
    X[:, 5] = rng.integers(0, 8, size=n)
    logit = 1.2 * X[:, 0] - 0.8 * X[:, 1] + 0.6 * X[:, 2] * X[:, 3] + np.where(X[:, 5] >= 5, 1.0, -0.5) - 1.5
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float64)
    w = np.linspace(0.3, 1.0, n)
    return X, y, w


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address="127.0.0.1:0", memory_limit="1GiB") as cluster, \
            distributed.Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def cfg() -> TrainingConfig:
    """The default config with the cluster threshold lowered to the test table's size."""
    return TrainingConfig(dask=DaskTrainingConfig(min_rows=1_000, timeout_s=120))


@pytest.fixture(scope="module")
def params(cfg: TrainingConfig) -> dict[str, Any]:
    return {**base_params(cfg, seed=0), "learning_rate": 0.1, "num_leaves": 15, "min_data_in_leaf": 50,
            "feature_fraction": 0.8, "bagging_fraction": 0.9, "lambda_l2": 1.0}


def test_the_cluster_fits_a_booster_as_good_as_one_machine(client: Any, cfg: TrainingConfig,
                                                           params: dict[str, Any]) -> None:
    X, y, w = _table(6_000, seed=1)
    X_test, y_test, _ = _table(3_000, seed=2)
    assert use_dask(client, len(y), cfg.dask) and not use_dask(None, len(y), cfg.dask)
    assert not use_dask(client, 999, cfg.dask)

    distributed_booster = final_booster(X, y, w, [5], params, ROUNDS, cfg, client)
    single = final_booster(X, y, w, [5], params, ROUNDS, cfg, None)

    # a plain Booster of the fixed rounds: the bundle stores it exactly as a single-machine one
    assert type(distributed_booster) is type(single)
    assert distributed_booster.num_trees() == single.num_trees() == ROUNDS
    assert "tree_learner: data" not in single.model_to_string()
    reloaded = type(single)(model_str=distributed_booster.model_to_string())
    p_dist, p_single = reloaded.predict(X_test), single.predict(X_test)
    auc_dist, auc_single = roc_auc_score(y_test, p_dist), roc_auc_score(y_test, p_single)
    assert auc_single > 0.75
    assert abs(auc_dist - auc_single) < 0.02
    assert np.corrcoef(p_dist, p_single)[0, 1] > 0.95


def test_the_timeout_abandons_the_fit_with_a_clean_error(client: Any, params: dict[str, Any]) -> None:
    X, y, w = _table(4_000, seed=3)
    cfg = DaskTrainingConfig(min_rows=1, timeout_s=0.01)
    with pytest.raises(DaskFitTimeout, match=r"did not finish within 0\.01 s"):
        fit_booster_dask(client, X, y, w, categorical=[5], params=params, rounds=300, cfg=cfg)
    # the abandoned fit's tasks are cancelled and the lock freed once its thread ends: the cluster fits again
    booster = fit_booster_dask(client, X, y, None, categorical=[5], params=params, rounds=5,
                               cfg=DaskTrainingConfig(min_rows=1, timeout_s=120))
    assert booster.num_trees() == 5


def test_a_table_smaller_than_its_partitions_is_refused(client: Any, params: dict[str, Any]) -> None:
    X, y, _ = _table(10, seed=4)
    cfg = DaskTrainingConfig(min_rows=1, partitions_per_worker=8)
    with pytest.raises(DaskFitError, match="cannot fill 16 partitions"):
        fit_booster_dask(client, X, y, None, categorical=[5], params=params, rounds=5, cfg=cfg)
