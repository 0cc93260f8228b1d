"""Plain-words reasons for one score: the strongest SHAP contributions put into the schema's sentences.

Kept apart from the bundle contract (:mod:`training.bundle`) because it is presentation: how a value
is printed and which sentence stands for a missing value. Every text comes from the feature schema
stored in the bundle, so a reason always describes the features the model was trained on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from leadscore.features.schema import missing_text


def is_missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, (float, np.floating)) and math.isnan(value))


def format_value(value: Any) -> str:
    """A feature value as a reason shows it: integers without decimals, small floats with two."""
    if is_missing(value):
        return "none"
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if v.is_integer():
            return str(int(v))
        return f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"
    return str(value)


def as_mapping(features_row: Any) -> Mapping[str, Any]:
    """One moment's features from a mapping, a Series or a one-row DataFrame."""
    if isinstance(features_row, pd.DataFrame):
        if len(features_row) != 1:
            raise ValueError(f"reasons() explains one row; got {len(features_row)}")
        return features_row.iloc[0].to_dict()
    if isinstance(features_row, pd.Series):
        return features_row.to_dict()
    if isinstance(features_row, Mapping):
        return features_row
    raise TypeError(f"expected a mapping, Series or one-row DataFrame, got {type(features_row).__name__}")


def reason(spec: Mapping[str, Any], row: Mapping[str, Any], contribution: float) -> dict[str, Any]:
    """One contribution as ``{feature, value, contribution, text}``, the text from the schema's template."""
    value = row[spec["name"]]
    if is_missing(value):
        text = spec.get("missing") or missing_text(spec["name"])  # flat schemas and older bundles have none
    else:
        text = (spec.get("template") or f"{spec['name']}: {{value}}").format(value=format_value(value))
    return {"feature": spec["name"], "value": format_value(value), "contribution": contribution, "text": text}


def top_reasons(
    schema: Sequence[Mapping[str, Any]], row: Mapping[str, Any], contrib: np.ndarray, k: int
) -> dict[str, list[dict[str, Any]]]:
    """The ``k`` strongest positive and negative contributions (``contrib`` in schema order, no bias)."""
    # only the k strongest each way are put into words (ties keep schema order)
    pos = [int(j) for j in np.argsort(-contrib, kind="stable")[:k] if contrib[j] > 0]
    neg = [int(j) for j in np.argsort(contrib, kind="stable")[:k] if contrib[j] < 0]
    return {"positive": [reason(schema[j], row, float(contrib[j])) for j in pos],
            "negative": [reason(schema[j], row, float(contrib[j])) for j in neg]}
