"""A bound bundle's batch predictions with one target's contributions, every input converted once.

Batch scoring (:func:`training.batch_score.score_frame`) needs both targets' calibrated probabilities and
the sql model's per-feature contributions for a chunk of feature rows. Done naively that is two
encodings (each a conversion of ~120 numeric columns), two sets of logistic terms (each the same
conversion again, and per string column a factorisation) and a prediction plus an attribution of the
sql trees. Here the numeric block is converted once (the encoding's, kept in a :class:`FrameColumns`
that both logistic models read), each string column factorised once, and with the path attribution the
walk that attributes the sql trees also gives their probability, as on the one-row path
(:mod:`training.row_path`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from leadscore.training.encoding import check_columns, encode_frame
from leadscore.training.linear import FrameColumns

if TYPE_CHECKING:
    from leadscore.training.bundle import BoundBundle


def encode_shared(bundle: BoundBundle, features: pd.DataFrame, target: str, cols: FrameColumns) -> np.ndarray:
    """``bundle.encode(features, target)``, its numeric columns kept in ``cols`` for the logistic terms
    (the encoding converts them exactly as :meth:`FrameColumns.numeric` would: the same call)."""
    x = encode_frame(features, bundle.schema, bundle.models[target].encodings, cols.factorized)
    if not cols.has_numeric:
        num = [j for j, s in enumerate(bundle.schema) if s["dtype"] != "str"]
        cols.add_numeric([bundle.schema[j]["name"] for j in num], x[:, num].T)
    return x


def explain_frame(bundle: BoundBundle, features: pd.DataFrame, target: str) -> tuple[pd.DataFrame, np.ndarray]:
    """:meth:`BoundBundle.predict_explained` (see there and the module docstring)."""
    probs, contrib, _ = explain_block(bundle, features, target)
    return probs, contrib


def explain_block(bundle: BoundBundle, features: pd.DataFrame, target: str,
                  cols: FrameColumns | None = None) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """:func:`explain_frame` and the rows' schema columns as float64 (rows x columns; numeric columns as
    the encoding converts them, string columns as their codes): what the reasons word the values from
    (:func:`training.reason_batch.batch_top_ids`), converted once with everything else. ``cols``: the frame's
    columns as the caller keeps them (the reasons read its string columns' factorisations)."""
    from leadscore.training.bundle import OUTPUT_COLUMNS

    check_columns(features, bundle.schema)
    n = len(bundle.schema)
    cols = FrameColumns(features) if cols is None else cols
    out: dict[str, np.ndarray] = {}
    contrib = np.zeros((len(features), n))
    block: np.ndarray | None = None
    for t, m in bundle.models.items():
        x = encode_shared(bundle, features, t, cols) if m.uses_trees else None
        lin = m.linear if m.kind != "lightgbm" else None
        terms = None if lin is None else lin.term_matrix(cols)
        p_lin = None if lin is None or terms is None else lin.probability(terms)
        p_trees = trees = None
        if x is not None and t == target and bundle.attribution == "path" and m.path_model(n).binary_logit:
            paths = m.path_model(n)
            margin, trees = paths.margins(x)
            p_trees = paths.probabilities(margin)
        elif x is not None:
            p_trees = m.booster.predict(x)
            trees = bundle.tree_contributions(x, t)[:, :-1] if t == target else None
        out[OUTPUT_COLUMNS[t]] = m.calibrator(np.asarray(m.combine(p_trees, p_lin), dtype=np.float64))
        if t == target:
            linear = None if terms is None or lin is None else lin.schema_contributions(terms, bundle.feature_names)
            contrib = m.combine_contributions(trees, linear)
        if x is not None:
            block = x
    if block is None:
        block = encode_shared(bundle, features, target, cols)
    return pd.DataFrame(out, index=features.index), contrib, block


__all__ = ["encode_shared", "explain_block", "explain_frame"]
