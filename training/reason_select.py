"""The concept sums and order of :func:`training.reasons.top_reasons` for a whole batch, compiled (numba).

:func:`training.reason_batch.concept_sums` (the batch's sums where the compiled walk of
:mod:`training.reason_walk` is not used, and the reference it is held to in the tests). Imported when first
used: numba compiles on first call (cached on disk).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def concept_row(i: int, contrib: np.ndarray, concept_of: np.ndarray, n_concepts: int, sums: np.ndarray,
                order: np.ndarray, key: np.ndarray) -> None:
    """Row ``i``'s concept sums (added in column order: ``sums[i, concept_of[j]] += contrib[i, j]`` for
    j = 0, 1, ...: the same bits as numpy) and its concepts by decreasing absolute sum, ties in concept
    order (``np.argsort(-abs(sums), kind="stable")``; an insertion sort, rows hold a few dozen concepts).
    ``key`` is scratch of ``n_concepts``. Shared with :mod:`training.reason_walk`, so both order alike."""
    for c in range(n_concepts):
        sums[i, c] = 0.0
    for j in range(contrib.shape[1]):
        sums[i, concept_of[j]] += contrib[i, j]
    for c in range(n_concepts):
        key[c] = -abs(sums[i, c])
        p = c
        while p > 0 and key[order[i, p - 1]] > key[c]:
            order[i, p] = order[i, p - 1]
            p -= 1
        order[i, p] = c


@njit(cache=True)
def concept_prefix(i: int, contrib: np.ndarray, concept_of: np.ndarray, n_concepts: int, sums: np.ndarray,
                   order: np.ndarray, key: np.ndarray, w: int) -> int:
    """:func:`concept_row`'s sums and only the first ``w`` positions of its order (the same positions: an
    insertion into a prefix that drops what falls past it, equal keys kept in concept order); returns how
    many positions are known (``min(w, n_concepts)``). The reasons walk reads a few positions of a row's
    order; sorting all of a row's concepts cost a third of it."""
    for c in range(n_concepts):
        sums[i, c] = 0.0
    for j in range(contrib.shape[1]):
        sums[i, concept_of[j]] += contrib[i, j]
    w = min(w, n_concepts)
    known = 0
    for c in range(n_concepts):
        kc = -abs(sums[i, c])
        key[c] = kc
        if known == w:
            if not key[order[i, w - 1]] > kc:
                continue
            p = w - 1  # the last one falls past the prefix
        else:
            p = known
            known += 1
        while p > 0 and key[order[i, p - 1]] > kc:
            order[i, p] = order[i, p - 1]
            p -= 1
        order[i, p] = c
    return known


@njit(cache=True)
def concept_order(contrib: np.ndarray, concept_of: np.ndarray, n_concepts: int) -> tuple[np.ndarray, np.ndarray]:
    """Every row's :func:`concept_row`: the sums and the order. NaN-free ``contrib`` only (numpy sorts NaN
    last; the caller falls back to it)."""
    n = contrib.shape[0]
    sums = np.zeros((n, n_concepts))
    order = np.empty((n, n_concepts), dtype=np.int64)
    key = np.empty(n_concepts)
    for i in range(n):
        concept_row(i, contrib, concept_of, n_concepts, sums, order, key)
    return sums, order


__all__ = ["concept_order", "concept_prefix", "concept_row"]
