"""Numba building blocks of the feature kernel: constants, the sorted-slice search, sorting and hashing.

The kernel itself is the feature families' functions (:mod:`features.families`) called in registry
order by a generated driver (:mod:`features.driver`). Inputs are per-lead arrays in CSR layout
(``ptr[l]:ptr[l+1]`` slices, sorted by time then code), times as int64 microseconds since the epoch.
Each moment ``(lead, t)`` is computed **from scratch** from the rows with time ``<= t``: it never
reuses state from another moment, so a moment's values do not depend on which other moments are
computed with it. That is what makes the online call (one lead, one moment) bit-identical to the
batch row, and what makes the batch embarrassingly parallel and partitionable by lead. Every family
sums from the latest activity back to the earliest, in the same order on every path.
"""

from __future__ import annotations

import numpy as np
from numba import njit

DAY_US = 86_400_000_000
LN2 = 0.6931471805599453
#: "never closed" / "no window" sentinel for int64 microsecond times
FAR = np.iinfo(np.int64).max
#: moments per tile in the driver's parallel runner
TILE = 256


@njit(cache=True, inline="always")
def upper(a: np.ndarray, lo: int, hi: int, v: int) -> int:
    """First index in ``a[lo:hi]`` (sorted) whose value is > v (numpy's searchsorted side='right')."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[mid] <= v:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True)
def hash_strings(offsets: np.ndarray, data: np.ndarray, out: np.ndarray) -> None:
    """64-bit FNV-1a of each string of an Arrow string buffer (``offsets`` has len(out) + 1 entries).

    Used to prove that activity ids are distinct without building a hash table of Python strings;
    equal hashes are re-checked exactly by the caller.
    """
    for i in range(out.shape[0]):
        h = np.uint64(0xCBF29CE484222325)
        for j in range(offsets[i], offsets[i + 1]):
            h = (h ^ np.uint64(data[j])) * np.uint64(0x100000001B3)
        out[i] = h


@njit(cache=True)
def is_sorted_by(group: np.ndarray, key: np.ndarray) -> bool:
    """True when rows are already ordered by (group, key): :func:`group_sort` would return the identity.

    One sequential pass; CRM exports grouped by lead (and the event store's replays) skip the sort
    and the gathers behind it.
    """
    for i in range(1, group.shape[0]):
        if group[i] < group[i - 1] or (group[i] == group[i - 1] and key[i] < key[i - 1]):
            return False
    return True


@njit(cache=True)
def group_sort(group: np.ndarray, key: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Order rows by (group, key), stable; returns (order, CSR pointers over groups).

    A counting sort by group (O(n)) then a merge sort of each group's slice by key, skipped when the
    slice is already sorted — CRM exports usually are, so this is near-linear where ``np.lexsort``
    pays a full 10M-row comparison sort twice. ``group`` values must be in ``0..n_groups-1``.
    """
    n = group.shape[0]
    ptr = np.zeros(n_groups + 1, dtype=np.int64)
    for i in range(n):
        ptr[group[i] + 1] += 1
    for g in range(n_groups):
        ptr[g + 1] += ptr[g]
    fill = ptr[:-1].copy()
    order = np.empty(n, dtype=np.int64)
    for i in range(n):
        g = group[i]
        order[fill[g]] = i
        fill[g] += 1
    for g in range(n_groups):
        lo, hi = ptr[g], ptr[g + 1]
        if hi - lo < 2:
            continue
        ordered = True
        for j in range(lo + 1, hi):
            if key[order[j]] < key[order[j - 1]]:
                ordered = False
                break
        if not ordered:
            idx = order[lo:hi].copy()
            sub = np.argsort(key[idx], kind="mergesort")
            for j in range(hi - lo):
                order[lo + j] = idx[sub[j]]
    return order, ptr
