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





#: how :func:`linear_rows` writes the contributions: not at all, the blend with the trees', the linear ones alone
NO_CONTRIB, BLEND, LINEAR = 0, 1, 2
#: rows per block of :func:`linear_rows` (its scratch row is allocated once per block)
_BLOCK = 512


@njit(cache=True)
def linear_rows(logs: np.ndarray, log_col: np.ndarray, fill_logs: np.ndarray, center: np.ndarray,
                scale: np.ndarray, coef: np.ndarray, missing_coef: np.ndarray, cat_terms: np.ndarray,
                term_col: np.ndarray, means: np.ndarray, mode: int, w_trees: float, w_linear: float,
                contrib: np.ndarray, sums: np.ndarray) -> None:
    """One logistic model over a batch, row by row, without its term matrix: ``sums[r]`` = the row's terms
    added in model order (numeric, then categorical; the order of ``term_matrix(...).sum(axis=1)``), and
    per schema column ``j`` the linear contribution ``term - means[j]`` (0 - 0 without a term, as
    ``row_path._Linear.contributions``) written to ``contrib[r, j]`` as ``mode`` says: :data:`BLEND`
    ``w_trees * contrib[r, j] + w_linear * linear`` (``TargetModel.combine_contributions``, ``contrib``
    holding the trees'), :data:`LINEAR` the linear one. The numeric terms are :func:`numeric_terms`'
    arithmetic on ``logs`` (rows x columns: signed logs, NaN missing; numeric term ``i`` reads column
    ``log_col[i]``); ``cat_terms`` (rows x category terms) the category terms; ``term_col``: each term's
    schema column (numeric, then categorical). The same IEEE operations in the same order: the same bits."""
    n = logs.shape[0]
    n_num = len(log_col)
    width = len(means)
    missing = coef * ((fill_logs - center) / scale) + missing_coef * 1.0  # per term, as numeric_terms
    present = missing_coef * 0.0
    for b in range((n + _BLOCK - 1) // _BLOCK):
        lin = np.empty(width)
        terms = np.empty(n_num)
        for r in range(b * _BLOCK, min(n, (b + 1) * _BLOCK)):
            lin[:] = 0.0
            for i in range(n_num):  # no branch: a missing value's term is chosen, not jumped to
                v = logs[r, log_col[i]]
                t = coef[i] * ((v - center[i]) / scale[i]) + present[i]
                terms[i] = missing[i] if v != v else t
            s = 0.0
            for i in range(n_num):
                t = terms[i]
                s += t
                lin[term_col[i]] = t
            for q in range(cat_terms.shape[1]):
                t = cat_terms[r, q]
                s += t
                lin[term_col[n_num + q]] = t
            sums[r] = s
            if mode == BLEND:
                for j in range(width):
                    contrib[r, j] = w_trees * contrib[r, j] + w_linear * (lin[j] - means[j])
            elif mode == LINEAR:
                for j in range(width):
                    contrib[r, j] = lin[j] - means[j]


__all__ = ["BLEND", "LINEAR", "NO_CONTRIB", "linear_rows", "numeric_terms"]

