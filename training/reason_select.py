"""The top-k selection of :func:`training.reasons.top_reasons` for a whole batch, compiled (numba).

Batch scoring words the reasons of every row of a chunk. The rule of one row (strongest concepts first,
a zero sum ends the walk, a concept that words nothing is skipped, concepts that word the same sentence
merge with their sums added, the walk stops once both sides hold ``k``; then each side sorted, stable)
is a short loop that cost ~3 predictions per row in Python. Here it runs over sentence ids instead of
sentences (:func:`training.reason_batch.concept_text_ids` words each distinct (column, value) once per
batch), the same comparisons and the same float additions in the same order, so the chosen sentences
are the same. Imported when first used: numba compiles on first call (cached on disk).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def select_top(sums: np.ndarray, order: np.ndarray, ids: np.ndarray,
               k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row, the sentence ids of the ``k`` strongest reasons for and against (-1 pads a short side),
    and whether the row's walk reached a concept not worded (its answer is then to be recomputed).

    ``sums``: rows x concepts summed contributions; ``order``: each row's concepts by decreasing
    absolute sum (stable); ``ids``: rows x concepts sentence id of the concept in that row (-1: the
    concept words nothing there; -2: not worded). The exact rule of ``training.reasons._select``.
    """
    n, n_concepts = sums.shape
    pos = np.full((n, k), -1, dtype=np.int64)
    neg = np.full((n, k), -1, dtype=np.int64)
    item_id = np.empty(n_concepts, dtype=np.int64)
    item_sum = np.empty(n_concepts, dtype=np.float64)
    used = np.zeros(n_concepts, dtype=np.bool_)
    short = np.zeros(n, dtype=np.bool_)
    for i in range(n):
        m = 0
        for p in range(n_concepts):
            c = order[i, p]
            s = sums[i, c]
            if s == 0.0:
                break
            t = ids[i, c]
            if t == -2:
                short[i] = True
                break
            if t < 0:
                continue
            found = -1
            for q in range(m):
                if item_id[q] == t:
                    found = q
                    break
            if found < 0:
                item_id[m] = t
                item_sum[m] = s
                m += 1
            else:
                item_sum[found] += s
            n_pos = 0
            n_neg = 0
            for q in range(m):
                if item_sum[q] > 0:
                    n_pos += 1
                elif item_sum[q] < 0:
                    n_neg += 1
            if n_pos >= k and n_neg >= k:
                break
        # each side by strength, ties in walk order (Python's stable sort); strict comparisons keep the first
        used[:m] = False
        for r in range(k):
            best = -1
            for q in range(m):
                if not used[q] and item_sum[q] > 0 and (best < 0 or item_sum[q] > item_sum[best]):
                    best = q
            if best < 0:
                break
            used[best] = True
            pos[i, r] = item_id[best]
        for r in range(k):
            best = -1
            for q in range(m):
                if not used[q] and item_sum[q] < 0 and (best < 0 or item_sum[q] < item_sum[best]):
                    best = q
            if best < 0:
                break
            used[best] = True
            neg[i, r] = item_id[best]
    return pos, neg, short


@njit(cache=True)
def concept_order(contrib: np.ndarray, concept_of: np.ndarray, n_concepts: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row the concepts' sums, added in column order (``sums[:, concept_of[j]] += contrib[:, j]`` for
    j = 0, 1, ...: the same bits), and the concepts by decreasing absolute sum, ties in concept order
    (``np.argsort(-abs(sums), kind="stable")``; an insertion sort, rows hold a few dozen concepts).
    NaN-free ``contrib`` only (numpy sorts NaN last; the caller falls back to it)."""
    n, m = contrib.shape
    sums = np.zeros((n, n_concepts))
    order = np.empty((n, n_concepts), dtype=np.int64)
    key = np.empty(n_concepts)
    for i in range(n):
        for j in range(m):
            sums[i, concept_of[j]] += contrib[i, j]
        for c in range(n_concepts):
            key[c] = -abs(sums[i, c])
            p = c
            while p > 0 and key[order[i, p - 1]] > key[c]:
                order[i, p] = order[i, p - 1]
                p -= 1
            order[i, p] = c
    return sums, order


__all__ = ["concept_order", "select_top"]
