"""The concept sums and order of :func:`training.reasons.top_reasons` for a whole batch, compiled (numba).

:func:`concept_rows` is the first step of each row's batch walk (:mod:`training.reason_walk`; the tests hold
it to numpy's ``bincount`` and stable ``argsort``). Imported when first used: numba compiles on first call
(cached on disk).
"""

from __future__ import annotations

import numpy as np
from numba import njit, uint64


@njit(cache=True)
def concept_rows(rows: np.ndarray, lo: int, hi: int, contrib: np.ndarray, concept_of: np.ndarray, sums: np.ndarray,
                 order: np.ndarray) -> None:
    """For each row ``i`` of ``rows[lo:hi]``: its concept sums (added in column order:
    ``sums[i, concept_of[j]] += contrib[i, j]`` for j = 0, 1, ...: the same bits as numpy) and its
    concepts by decreasing absolute sum, ties in concept order (``np.argsort(-abs(sums), kind="stable")``).
    Each concept's position is counted, not found by a sort: the keys ``-|sum|`` smaller than its own (over
    all keys: a loop of fixed length, vectorised), plus the equal ones before it. A NaN sum's key is +inf, so
    NaN sums come last in concept order, as numpy puts them (a NaN key compares false with every other:
    positions would collide and others stay unwritten). A row holds a few dozen concepts; the counts are
    branch-free loops, where an insertion sort's data-dependent branch mispredicts once per concept. A
    block of rows per call: a compiled call's arrays are reference counted, in and out.
    Shared with :mod:`training.reason_walk`, so both order alike."""
    n_concepts = sums.shape[1]
    key = np.empty(n_concepts)
    for r in range(lo, hi):
        i = uint64(rows[r])  # indices read from arrays, unsigned: numba tests a signed one for a negative value
        for c in range(n_concepts):
            sums[i, c] = 0.0
        for j in range(contrib.shape[1]):
            sums[i, uint64(concept_of[j])] += contrib[i, j]
        for c in range(n_concepts):
            s = sums[i, c]
            key[c] = -abs(s) if s == s else np.inf  # NaN last, as numpy sorts it: every position filled
        for c in range(n_concepts):
            kc = key[c]
            at = 0
            for d in range(n_concepts):  # every key, a fixed count: one vector loop
                at += key[d] < kc
            for d in range(c):  # ties before it (rare)
                at += key[d] == kc
            order[i, uint64(at)] = c


__all__ = ["concept_rows"]
