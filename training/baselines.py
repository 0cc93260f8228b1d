"""The baselines every model must beat on the same test months.

* The **rule score** is what marketing runs today (points per activity and attribute). It is not a
  probability, so for log loss / Brier / ECE it is mapped to one with a Platt fit on the calibration
  months — the fairest version of the rule; its ranking metrics are untouched by that map.
* A **logistic regression** on the same features shows how much the boosted trees add over a linear
  model (signed log transform for the heavy-tailed counts, one-hot for the string features); it is
  the same :class:`~training.linear.LinearModel` a retrain may ship as its model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from leadscore.training.linear import LinearModel, fit_linear


def fit_rule_probability(rule_cal: np.ndarray, y_cal: np.ndarray) -> Any:
    """A Platt map from rule points to probability, fitted on the calibration months."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=1e6, max_iter=1000))
    x = np.nan_to_num(np.asarray(rule_cal, dtype=np.float64)).reshape(-1, 1)
    model.fit(x, np.asarray(y_cal).astype(int))
    return model


def rule_probability(model: Any, rule: np.ndarray) -> np.ndarray:
    x = np.nan_to_num(np.asarray(rule, dtype=np.float64)).reshape(-1, 1)
    return np.asarray(model.predict_proba(x)[:, 1])


def fit_logistic(
    frame: pd.DataFrame, y: np.ndarray, schema: Sequence[Mapping[str, Any]], seed: int = 0,
    weights: np.ndarray | None = None,
) -> LinearModel:
    """The logistic model (:mod:`training.linear`): the baseline, and the candidate a retrain may ship."""
    return fit_linear(frame, y, schema, weights=weights, seed=seed)


def predict_logistic(model: LinearModel, frame: pd.DataFrame, schema: Sequence[Mapping[str, Any]]) -> np.ndarray:
    return model.predict(frame[[s["name"] for s in schema]])


def baseline_scores(
    frame: pd.DataFrame,
    y: np.ndarray,
    rule: np.ndarray,
    schema: Sequence[Mapping[str, Any]],
    *,
    logistic_rows: np.ndarray,
    rule_rows: np.ndarray,
    test_rows: np.ndarray,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Scores of the ``test_rows`` (positions) by both baselines, each fitted only on the rows named.

    ``logistic`` is fitted on ``logistic_rows``, the rule's Platt map on ``rule_rows``; the caller
    names the same kind of rows it gave the model, so the contenders are compared fairly.
    """
    logistic = fit_logistic(frame.iloc[logistic_rows], y[logistic_rows], schema, seed=seed)
    rule_map = fit_rule_probability(rule[rule_rows], y[rule_rows])
    return {"logistic": predict_logistic(logistic, frame.iloc[test_rows], schema),
            "rule": rule_probability(rule_map, rule[test_rows])}
