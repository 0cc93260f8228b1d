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

from leadscore.training.encoding import check_columns, encode_frame, encode_parts, recode
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
    columns as the caller keeps them (the reasons read its string columns' factorisations).

    The logistic models read the same converted block: the signed logs of its numeric columns once for
    every model (numpy's ``log1p``, the one-row path's), then per model one compiled pass
    (:func:`training.linear_terms.linear_rows`) that adds its terms and writes the target's contributions
    blended with the trees' in place: no term matrix, no separate subtraction or blend."""
    from leadscore.training.bundle import OUTPUT_COLUMNS
    from leadscore.training.linear import signed_log
    from leadscore.training.linear_terms import BLEND, LINEAR, NO_CONTRIB, linear_rows

    check_columns(features, bundle.schema)
    n = len(bundle.schema)
    cols = FrameColumns(features) if cols is None else cols
    first = next((t for t, m in bundle.models.items() if m.uses_trees), target)
    block, numeric_block = encode_parts(features, bundle.schema, bundle.models[first].encodings, cols.factorized)
    pos = {name: j for j, name in enumerate(bundle.feature_names)}
    linears = {t: m.linear for t, m in bundle.models.items() if m.linear is not None and m.kind != "lightgbm"}
    numeric = [j for j, s in enumerate(bundle.schema) if s["dtype"] != "str"]  # the numeric block's columns
    logs = signed_log(numeric_block) if any(lin.numeric for lin in linears.values()) else numeric_block
    log_col = {j: i for i, j in enumerate(numeric)}
    out: dict[str, np.ndarray] = {}
    contrib = np.zeros((len(features), n))
    for t, m in bundle.models.items():
        x = None
        if m.uses_trees:
            x = block if t == first else recode(block, features, bundle.schema, m.encodings, cols.factorized)
        p_trees = trees = None
        if x is not None and t == target and bundle.attribution == "path" and m.path_model(n).binary_logit:
            paths = m.path_model(n)
            margin, trees = paths.margins(x)
            p_trees = paths.probabilities(margin)
        elif x is not None:
            p_trees = m.booster.predict(x)
            trees = bundle.tree_contributions(x, t)[:, :-1] if t == target else None
        lin = linears.get(t)
        p_lin = None
        if lin is not None:
            mode = NO_CONTRIB if t != target else (BLEND if trees is not None else LINEAR)
            if t == target:
                contrib = np.ascontiguousarray(trees, dtype=np.float64) if trees is not None else contrib
            w = float(m.blend_weight) if mode == BLEND else 1.0  # type: ignore[arg-type]
            sums = np.empty(len(features))
            fill, center, scale, coef, miss_coef = lin._numeric_arrays
            means = np.zeros(n)
            for name, v in lin.term_means.items():
                if name in pos:
                    means[pos[name]] = v
            cat_terms = np.empty((len(features), len(lin.categorical)))
            for q, c in enumerate(lin.categorical):
                codes, labels = cols.codes(c.name)
                cat_terms[:, q] = np.array([c.coefs.get(v, 0.0) for v in labels], dtype=np.float64)[codes]
            linear_rows(logs, np.array([log_col[pos[x.name]] for x in lin.numeric], dtype=np.int64),
                        signed_log(fill), center, scale, coef, miss_coef, cat_terms,
                        np.array([pos[f] for f in lin.features], dtype=np.int64), means, mode, w, 1.0 - w,
                        contrib, sums)
            p_lin = np.asarray(1.0 / (1.0 + np.exp(-(lin.intercept + sums))))
        elif t == target:
            contrib = m.combine_contributions(trees, None)
        out[OUTPUT_COLUMNS[t]] = m.calibrator(np.asarray(m.combine(p_trees, p_lin), dtype=np.float64))
    return pd.DataFrame(out, index=features.index), contrib, block


__all__ = ["encode_shared", "explain_block", "explain_frame"]
