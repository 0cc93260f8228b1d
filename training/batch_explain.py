"""A bound bundle's batch predictions with one target's contributions, every input converted once.

Batch scoring (:func:`training.batch_score.score_frame`) needs both targets' calibrated probabilities and
the sql model's per-feature contributions for a chunk of feature rows. Done naively that is two
encodings (each a conversion of ~120 numeric columns), two ``Booster.predict`` calls (each building a
predictor), a path walk or TreeSHAP of the sql trees and two passes of logistic terms. Here the chunk is
encoded once, column-major, for both targets' category tables; the signed logs are taken once; and each
target is one compiled pass over the rows, in parallel (:mod:`training.batch_pass`): the path walk of its
trees (the one-row path's: the margin, so the probability, equals LightGBM's to the bit, and for the
explained target the contributions) and its logistic terms blended in place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from leadscore.training.encoding import check_columns, encode_columns, encode_frame
from leadscore.training.linear import FrameColumns
from leadscore.training.linear_terms import BLEND, LINEAR, NO_CONTRIB

if TYPE_CHECKING:
    from leadscore.training.bundle import BoundBundle
    from leadscore.training.linear import LinearModel


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


def explain_block(bundle: BoundBundle, features: pd.DataFrame, target: str | None,
                  cols: FrameColumns | None = None) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """:func:`explain_frame` (``target`` None: the probabilities alone, no contributions: zeros) and the
    rows' schema columns as float64 (rows x columns, a column-major view; numeric columns as the encoding
    converts them, string columns as the explained target's codes): what the reasons word the values from
    (:func:`training.reason_batch.batch_top_ids`), converted once with everything else. ``cols``: the
    frame's columns as the caller keeps them (the reasons read its string columns' factorisations).

    The chunk is encoded once for every target, column-major (:func:`training.encoding.encode_columns`);
    ``log1p(|x|)`` of the numeric columns the logistic models read once for all of them (numpy's, the
    one-row path's); then per target one compiled pass over the rows (:func:`training.batch_pass.target_pass`)
    walks its trees (margin, and the explained target's contributions) and adds its logistic terms,
    blending the contributions in place. A tree model the walk cannot stand for (not a binary logistic;
    or, for the explained target, a TreeSHAP bundle) is predicted by LightGBM over the row-major encoding."""
    from leadscore.training.attribution import _PARALLEL
    from leadscore.training.batch_pass import target_pass
    from leadscore.training.bundle import OUTPUT_COLUMNS

    check_columns(features, bundle.schema)
    n, rows = len(bundle.schema), len(features)
    cols = FrameColumns(features) if cols is None else cols
    order = sorted(bundle.models, key=lambda t: t != target)  # the explained target's codes in rows 0..n-1
    values, slots = encode_columns(features, bundle.schema, [bundle.models[t].encodings for t in order],
                                   cols.factorized)
    slot = dict(zip(order, slots, strict=True))
    pos = {name: j for j, name in enumerate(bundle.feature_names)}
    linears = {t: m.linear for t, m in bundle.models.items() if m.linear is not None and m.kind != "lightgbm"}
    log_rows = sorted({pos[x.name] for lin in linears.values() for x in lin.numeric})
    log_row = np.zeros(n, dtype=np.int64)
    log_row[log_rows] = np.arange(len(log_rows))
    abs_logs = np.abs(values[log_rows]) if log_rows else np.empty((0, rows))
    np.log1p(abs_logs, out=abs_logs)
    out: dict[str, np.ndarray] = {}
    contrib = np.zeros((rows, n)) if target not in bundle.models else np.empty((rows, n))
    for t, m in bundle.models.items():
        explain = t == target
        paths = m.path_model(n) if m.uses_trees else None
        walk = paths is not None and paths.binary_logit and (not explain or bundle.attribution == "path")
        p_trees = None
        if m.uses_trees and not walk:
            x = np.ascontiguousarray(values[slot[t]].T)
            p_trees = m.booster.predict(x)
            if explain:
                contrib[:] = bundle.tree_contributions(x, t)[:, :n]
        lin = linears.get(t)
        margin, sums = np.empty(rows), np.empty(rows)
        if walk or lin is not None:
            assert paths is not None or not walk
            arrays = paths._arrays() if walk else _NO_TREES  # type: ignore[union-attr]
            feature = arrays[0] if explain or not walk else slot[t][arrays[0]].astype(np.int32)
            mode, w, parts = NO_CONTRIB, 1.0, _linear_parts(lin, pos, cols, rows) if lin is not None else _NO_LINEAR
            if lin is not None and explain:
                mode = BLEND if m.uses_trees else LINEAR
                w = float(m.blend_weight) if mode == BLEND else 1.0  # type: ignore[arg-type]
            with _PARALLEL:
                target_pass(values, walk, explain, feature, *arrays[1:], lin is not None, parts[0], abs_logs,
                            log_row[parts[0]], *parts[1:], mode, w, 1.0 - w, contrib, margin, sums)
            if walk:
                p_trees = paths.probabilities(margin)  # type: ignore[union-attr]
        p_lin = None if lin is None else np.asarray(1.0 / (1.0 + np.exp(-(lin.intercept + sums))))
        out[OUTPUT_COLUMNS[t]] = m.calibrator(np.asarray(m.combine(p_trees, p_lin), dtype=np.float64))
    return pd.DataFrame(out, index=features.index), contrib, values[:n].T


def _linear_parts(lin: LinearModel, pos: dict[str, int], cols: FrameColumns, rows: int) -> tuple[np.ndarray, ...]:
    """A logistic model's arrays as :func:`training.linear_terms.linear_row` reads them: each numeric term's
    schema column, its missing and present constants, centre, scale, coefficient; the category terms
    (terms x rows), each term's schema column and the per-column fit-row means."""
    from leadscore.training.linear import signed_log
    from leadscore.training.linear_terms import term_constants

    fill, center, scale, coef, miss_coef = lin._numeric_arrays
    missing, present = term_constants(signed_log(fill), center, scale, coef, miss_coef)
    means = np.zeros(len(pos))
    for name, v in lin.term_means.items():
        if name in pos:
            means[pos[name]] = v
    cat_terms = np.empty((len(lin.categorical), rows))
    for q, c in enumerate(lin.categorical):
        codes, labels = cols.codes(c.name)
        cat_terms[q] = np.array([c.coefs.get(v, 0.0) for v in labels], dtype=np.float64)[codes]
    return (np.array([pos[x.name] for x in lin.numeric], dtype=np.int64), missing, present, center, scale, coef,
            cat_terms, np.array([pos[f] for f in lin.features], dtype=np.int64), means)


#: :func:`training.batch_pass.target_pass`'s tree and logistic arguments of a target without them
_NO_TREES = (np.empty(0, dtype=np.int32), np.empty(0), np.empty(0, dtype=np.uint8), np.empty(0, dtype=np.int32),
             np.empty(0, dtype=np.int32), np.empty(0), np.empty(0), np.empty(0, dtype=np.int32),
             np.empty(0, dtype=np.int32), np.empty(0, dtype=np.uint32), np.empty(0), np.empty(0, dtype=np.int32))
_NO_LINEAR = (np.empty(0, dtype=np.int64), np.empty(0), np.empty(0), np.empty(0), np.empty(0), np.empty(0),
              np.empty((0, 0)), np.empty(0, dtype=np.int64), np.empty(0))


__all__ = ["encode_shared", "explain_block", "explain_frame"]
