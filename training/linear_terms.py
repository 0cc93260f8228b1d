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


__all__ = ["numeric_terms"]
