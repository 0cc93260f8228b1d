"""One target's model over a chunk in one compiled pass (numba): trees, logistic terms and their blend.

Batch scoring (:func:`training.batch_explain.explain_block`) needs per target the trees' raw margin and
the logistic model's term sum, and for the explained target the per-feature contributions blended in
log-odds. Done as separate passes that is ``Booster.predict`` (a predictor built per call) or a path walk,
then a logistic pass that re-reads the contributions, each over its own row-major copy of the chunk.
Here each row is finished in one visit, rows in parallel over the cores (``prange``, as LightGBM's own
prediction uses them):

* the trees: :func:`training.attribution._one`, the path walk of the one-row path (LightGBM's routing, the
  leaf values added in tree order: ``predict(raw_score=True)`` to the bit), reading the row's column in
  the column-major chunk (:func:`training.encoding.encode_columns`) and adding each split's delta to the
  row's contributions, or to scratch for a target that is not explained;
* the logistic terms and the blend: :func:`training.linear_terms.linear_row`.

The arithmetic per row is that of those functions, so the results do not depend on how rows are split
among threads. Imported when first used: numba compiles on first call (cached on disk).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from leadscore.training.attribution import _one
from leadscore.training.linear_terms import linear_row

#: rows per block of :func:`target_pass` (its scratch arrays are allocated once per block)
_BLOCK = 256
_NO_LEAVES = np.empty(0, dtype=np.int32)


@njit(cache=True, parallel=True, nogil=True)
def target_pass(values: np.ndarray, walk: bool, explain: bool, feature: np.ndarray, threshold: np.ndarray,
                decision: np.ndarray, left: np.ndarray, right: np.ndarray, dl: np.ndarray, dr: np.ndarray,
                cat_start: np.ndarray, cat_words: np.ndarray, cat_bits: np.ndarray, leaf_value: np.ndarray,
                roots: np.ndarray, linear: bool, val_row: np.ndarray, abs_logs: np.ndarray, log_row: np.ndarray,
                missing: np.ndarray, present: np.ndarray, center: np.ndarray, scale: np.ndarray, coef: np.ndarray,
                cat_terms: np.ndarray, term_col: np.ndarray, means: np.ndarray, mode: int, w_trees: float,
                w_linear: float, contrib: np.ndarray, margin: np.ndarray, sums: np.ndarray) -> None:
    """Each row ``r`` of ``values`` (columns x rows): with ``walk`` the trees' margin into ``margin[r]`` and,
    with ``explain``, their contributions into ``contrib[r]`` (overwritten; ``feature`` then indexes the
    schema columns, else the rows of ``values`` the target reads); with ``linear`` the logistic terms'
    sum into ``sums[r]`` and the contributions written as ``mode`` says (:func:`linear_row`)."""
    n = values.shape[1]
    width = len(means) if linear else 0
    n_num = len(val_row)
    leaves = np.empty(0, dtype=np.int32)
    for b in prange((n + _BLOCK - 1) // _BLOCK):
        scratch = np.zeros(values.shape[0])
        lin = np.empty(width)
        terms = np.empty(n_num)
        for r in range(b * _BLOCK, min(n, (b + 1) * _BLOCK)):
            if walk:
                if explain:
                    row = contrib[r]
                    row[:] = 0.0
                    margin[r] = _one(values[:, r], row, leaves, feature, threshold, decision, left, right, dl, dr,
                                     cat_start, cat_words, cat_bits, leaf_value, roots)
                else:
                    margin[r] = _one(values[:, r], scratch, leaves, feature, threshold, decision, left, right, dl,
                                     dr, cat_start, cat_words, cat_bits, leaf_value, roots)
            if linear:
                sums[r] = linear_row(r, values, val_row, abs_logs, log_row, missing, present, center, scale, coef,
                                     cat_terms, term_col, means, mode, w_trees, w_linear, contrib, lin, terms)


__all__ = ["target_pass"]
