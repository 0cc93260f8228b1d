"""The numeric logistic terms of a batch in one compiled pass (numba): :meth:`LinearModel.term_matrix`.

Per numeric feature the term is ``coef * ((signed_log(x or fill) - center) / scale) + missing_coef * missing``.
As numpy array expressions that is a dozen passes over a (features x rows) block with as many temporaries,
which cost more than the boosted trees' prediction. The signed logs are computed by numpy (its own
``log1p``, the one the one-row path calls) once per batch for the values and once per model for the
fills; this kernel does the rest, the same IEEE operations in the same order per element (no fast-math,
so no fused multiply-add), hence the same bits as the array expressions. Imported when first used:
numba compiles on first call (cached on disk).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def numeric_terms(logs: np.ndarray, fill_logs: np.ndarray, center: np.ndarray, scale: np.ndarray,
                  coef: np.ndarray, missing_coef: np.ndarray, out: np.ndarray) -> None:
    """``out[i, r]`` = feature ``i``'s term in row ``r`` from ``logs`` (features x rows: the signed log of
    the value, NaN where missing) and per feature the signed log of its fill and its parameters."""
    for i in range(logs.shape[0]):
        c, s, a, m = center[i], scale[i], coef[i], missing_coef[i]
        missing = a * ((fill_logs[i] - c) / s) + m * 1.0
        present = m * 0.0
        for r in range(logs.shape[1]):
            v = logs[i, r]
            out[i, r] = missing if v != v else a * ((v - c) / s) + present


#: how :func:`linear_block` writes the contributions: not at all, the blend with the trees', the linear ones alone
NO_CONTRIB, BLEND, LINEAR = 0, 1, 2


@njit(cache=True)
def linear_block(values: np.ndarray, abs_logs: np.ndarray, lo: int, hi: int, val_col: np.ndarray,
                 missing: np.ndarray, present: np.ndarray, center: np.ndarray, scale: np.ndarray, coef: np.ndarray,
                 cat: np.ndarray, term_col: np.ndarray, means: np.ndarray, mode: int, w_trees: float,
                 w_linear: float, contrib: np.ndarray, sums: np.ndarray, lin: np.ndarray,
                 terms: np.ndarray) -> None:
    """One logistic model on rows ``lo..hi`` of a batch, without its term matrix: per row its terms added in
    model order (numeric, then categorical; the order of ``term_matrix(...).sum(axis=1)``) into
    ``sums[r - lo]``, and per schema column ``j`` the linear contribution ``term - means[j]`` (0 - 0 without a
    term, as ``row_path._Linear.contributions``) written to ``contrib[r, j]`` as ``mode`` says: :data:`BLEND`
    ``w_trees * contrib[r, j] + w_linear * linear`` (``TargetModel.combine_contributions``, ``contrib``
    holding the trees'), :data:`LINEAR` the linear one.

    Numeric term ``i`` reads the rows' values at ``values[val_col[i]]`` (columns x rows) and
    ``log1p(|value|)`` at ``abs_logs[val_col[i]]`` (numpy's ``log1p``, the one the one-row path calls: the C
    library's differs in the last bit); the sign is ``np.sign``'s (+0 for either zero), so ``sign * log`` is
    :func:`training.linear.signed_log` to the bit. ``missing`` and ``present`` are per term
    :func:`numeric_terms`' constants (:func:`term_constants`); ``cat`` the batch's category terms (terms x
    rows: a term down the rows is contiguous, as a numeric one's values); ``term_col`` each term's schema column; ``lin`` (rows of the block x schema width) and ``terms``
    (rows of the block) are scratch.

    A term is computed down the block's rows (one column's values are contiguous): the division, the
    costliest operation, runs on vectors of rows. Each row still gets the same IEEE operations in the same
    order (terms added one by one from 0.0, no fast-math): the same bits as the one-row path."""
    n_num = len(val_col)
    nb = hi - lo
    for r in range(nb):
        sums[r] = 0.0
    explain = mode != NO_CONTRIB
    if explain:
        lin[:nb, :] = 0.0
    for i in range(n_num):  # no branch: a missing value's term is chosen, not jumped to
        xs = values[val_col[i], lo:hi]
        logs = abs_logs[val_col[i], lo:hi]
        c, s, a, p, m = center[i], scale[i], coef[i], present[i], missing[i]
        for r in range(nb):
            v = xs[r]
            t = a * (((1.0 if v > 0.0 else (-1.0 if v < 0.0 else 0.0)) * logs[r] - c) / s) + p
            terms[r] = m if v != v else t
        for r in range(nb):
            sums[r] += terms[r]
        if explain:
            j = term_col[i]
            for r in range(nb):
                lin[r, j] = terms[r]
    for q in range(cat.shape[0]):
        for r in range(nb):
            sums[r] += cat[q, lo + r]
        if explain:
            j = term_col[n_num + q]
            for r in range(nb):
                lin[r, j] = cat[q, lo + r]
    if mode == BLEND:
        for r in range(nb):
            for j in range(len(means)):
                contrib[lo + r, j] = w_trees * contrib[lo + r, j] + w_linear * (lin[r, j] - means[j])
    elif mode == LINEAR:
        for r in range(nb):
            for j in range(len(means)):
                contrib[lo + r, j] = lin[r, j] - means[j]


@njit(cache=True)
def term_constants(fill_logs: np.ndarray, center: np.ndarray, scale: np.ndarray, coef: np.ndarray,
                   missing_coef: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per numeric term its value when missing and the missing indicator's part when present, as
    :func:`numeric_terms` computes them (:func:`linear_block` reads them)."""
    return coef * ((fill_logs - center) / scale) + missing_coef * 1.0, missing_coef * 0.0


__all__ = ["BLEND", "LINEAR", "NO_CONTRIB", "linear_block", "numeric_terms", "term_constants"]
