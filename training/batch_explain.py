"""A bound bundle's batch predictions with one target's contributions, every input converted once.

Batch scoring (:func:`training.batch_score.score_frame`) needs both targets' calibrated probabilities and
the sql model's per-feature contributions for a chunk of feature rows. Done naively that is two
encodings (each a conversion of ~120 numeric columns), two ``Booster.predict`` calls (each building a
predictor), a path walk or TreeSHAP of the sql trees and two passes of logistic terms. Here the chunk is
encoded once, column-major, for both targets' category tables; the signed logs are taken once; and one
compiled pass over the rows, in parallel, does every target (:mod:`training.batch_pass`): the path walk of its
trees (the one-row path's: the margin, so the probability, equals LightGBM's to the bit, and for the
explained target the contributions) and its logistic terms blended in place.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from functools import cache
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from leadscore.training.encoding import encode_columns, encode_frame
from leadscore.training.linear import FrameColumns, category_coefs

if TYPE_CHECKING:
    from leadscore.training.attribution import PathModel
    from leadscore.training.batch_pass import PassPlan
    from leadscore.training.bundle import BoundBundle
    from leadscore.training.reason_batch import BatchWalk


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
    probs, contrib, _, _ = explain_block(bundle, features, target, row_major=False)
    return pd.DataFrame(probs, index=features.index), contrib


def explain_block(bundle: BoundBundle, features: pd.DataFrame, target: str | None,
                  cols: FrameColumns | None = None, row_major: bool = True, groups: np.ndarray | None = None,
                  walk: BatchWalk | None = None) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """:func:`explain_frame` (the probabilities by output column, no frame; ``target`` None: the
    probabilities alone, no contributions: zeros) and the
    rows' schema columns as float64 (rows x columns; numeric columns as the encoding converts them, string
    columns as the explained target's codes): what the reasons word the values from
    (:class:`training.reason_batch.BatchWalk`), converted once with everything else. With a target and
    ``row_major`` it is a view of the row-major copy of the chunk the pass makes anyway (the reasons walk
    reads a row's values together: one cache line, not one per column); else of the column-major encoding.
    ``cols``: the frame's columns as the caller keeps them (the reasons read its string columns'
    factorisations).

    The chunk is encoded once for every target, column-major (:func:`training.encoding.encode_columns`);
    ``log1p(|x|)`` of its rows once for every logistic model (numpy's, the one-row path's); then one
    compiled pass over the rows (:func:`training.batch_pass.run_pass`, the bundle's plan built once) walks
    every target's trees (margin, and the explained target's contributions) and adds its logistic terms,
    blending the contributions in place. A tree model the walk cannot stand for (not a binary logistic;
    or, for the explained target, a TreeSHAP bundle) is predicted by LightGBM over the row-major encoding.

    The same pass finishes each row while its contributions are in cache: their sums over ``groups``
    (groups x schema columns, -1 padded: :func:`training.bands.band_groups`), returned fourth (rows x
    groups), and with ``walk`` (a target and ``row_major``) its reasons walk (:class:`BatchWalk`, whose rows
    that reached an unworded cell the caller then resolves)."""
    from leadscore.training.batch_pass import run_pass
    from leadscore.training.bundle import OUTPUT_COLUMNS

    n, rows = len(bundle.schema), len(features)
    cols = FrameColumns(features) if cols is None else cols
    order = sorted(bundle.models, key=lambda t: t != target)  # the explained target's codes in rows 0..n-1
    # encode_columns first checks the frame has every schema column (check_columns)
    values, slots = encode_columns(features, bundle.schema, [bundle.models[t].encodings for t in order],
                                   cols.factorized, cols.column)
    reads = dict(zip(order, slots, strict=True))
    plan, paths = _plan(bundle, target, order, reads)
    # log1p(|x|) of every schema row (a string column's codes too: one slice, no gather; never read)
    logs = _abs_logs(values[:n]) if plan.linear.any() else None  # on a helper thread while the rest is prepared
    contrib = np.empty((rows, n)) if plan.explain else np.zeros((rows, n))
    p_trees: dict[str, np.ndarray | None] = {t: None for t in order}
    for t in order:
        m = bundle.models[t]
        if m.uses_trees and t not in paths:  # LightGBM over the row-major encoding
            x = np.ascontiguousarray(values[reads[t]].T)
            p_trees[t] = m.booster.predict(x)
            if t == target:
                contrib[:] = bundle.tree_contributions(x, t)[:, :n]
    cat_terms = np.empty((int(plan.cat_range.max(initial=0)), rows))  # a term per row: each written contiguously
    for i, t in enumerate(order):
        lin = bundle.models[t].linear
        if plan.linear[i]:
            assert lin is not None
            for q, c in enumerate(lin.categorical, start=int(plan.cat_range[i, 0])):
                col = cols.column(c.name)
                if isinstance(col.dtype, pd.CategoricalDtype):  # the coefficient per code of the run's dictionary
                    np.take(category_coefs(c, col.dtype), col.array.codes, out=cat_terms[q], mode="wrap")  # -1: missing
                    continue
                codes, labels = cols.codes(c.name)
                cat_terms[q] = np.array([c.coefs.get(v, 0.0) for v in labels], dtype=np.float64)[codes]
    copy = np.empty((rows, len(values))) if plan.explain and row_major else None  # the reasons read rows
    walk_args = walk.compiled(copy) if walk is not None and copy is not None else None
    abs_logs = logs.result() if logs is not None else np.empty((0, rows))
    margin, sums, group_sums = run_pass(plan, values, abs_logs, cat_terms, contrib, copy,
                                        groups if plan.explain else None, walk_args)
    out: dict[str, np.ndarray] = {}
    for t, m in bundle.models.items():
        i = order.index(t)
        if t in paths:
            p_trees[t] = paths[t].probabilities(margin[i])
        lin = m.linear
        p_lin = np.asarray(1.0 / (1.0 + np.exp(-(lin.intercept + sums[i])))) if plan.linear[i] and lin else None
        out[OUTPUT_COLUMNS[t]] = m.calibrator(np.asarray(m.combine(p_trees[t], p_lin), dtype=np.float64))
    block = copy[:, :n] if copy is not None else values[:n].T
    return out, contrib, block, group_sums


#: elements below which :func:`_abs_logs` computes in the calling thread (handing over costs ~0.1 ms)
_SPLIT_MIN = 100_000


@cache
def _helper() -> ThreadPoolExecutor:
    """The worker thread :func:`_abs_logs` computes on, started on first use and kept."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="leadscore-logs")


def _abs_logs(x: np.ndarray) -> Future[np.ndarray]:
    """``np.log1p(np.abs(x))`` (numpy's ``log1p``: the one-row path's, whose bits the batch must match),
    computed on a helper thread: numpy's ufuncs release the GIL, so the calling thread meanwhile prepares
    the rest of the pass (the category terms, the reasons' value ids: Python, ~1.5 ms a chunk) on the other
    core. Under :data:`_SPLIT_MIN` elements, or with one CPU, computed here (the future done)."""
    from leadscore.training.threads import available_cpus

    def run() -> np.ndarray:
        out = np.abs(x)
        return np.log1p(out, out=out)

    if x.size < _SPLIT_MIN or available_cpus() < 2:
        done: Future[np.ndarray] = Future()
        done.set_result(run())
        return done
    return _helper().submit(run)


def _plan(bundle: BoundBundle, target: str | None, order: list[str],
          reads: dict[str, np.ndarray]) -> tuple[PassPlan, dict[str, PathModel]]:
    """The bundle's :class:`~training.batch_pass.PassPlan` for ``target`` (built once, kept with the bundle)
    and the compiled trees it walks: every binary logistic tree model, except the explained target's in a
    TreeSHAP bundle (its contributions are LightGBM's)."""
    from leadscore.training.batch_pass import pass_plan

    key = f"batch_pass:{target}"
    got = bundle._reasons.get(key)
    if got is None:
        n = len(bundle.schema)
        paths = {t: m.path_model(n) for t, m in bundle.models.items()
                 if m.uses_trees and m.path_model(n).binary_logit and (t != target or bundle.attribution == "path")}
        columns = {name: j for j, name in enumerate(bundle.feature_names)}
        got = bundle._reasons.setdefault(key, (pass_plan(order, bundle.models, paths, reads, columns,
                                                         target in bundle.models), paths))
    return got  # type: ignore[no-any-return]


__all__ = ["encode_shared", "explain_block", "explain_frame"]
