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

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from numba import njit, set_parallel_chunksize
from numba.core import cgutils, types
from numba.extending import intrinsic


@contextmanager
def parallel_chunks(size: int) -> Iterator[None]:
    """Inside, a parallel (``prange``) loop hands its iterations to the threads ``size`` at a time as
    they free up, instead of an equal share each up front: on a machine shared with other jobs one
    thread is often descheduled, and the other then takes over its work instead of waiting for it.
    Results are the same either way when no iteration depends on another."""
    previous = set_parallel_chunksize(size)
    try:
        yield
    finally:
        set_parallel_chunksize(previous)

DAY_US = 86_400_000_000
LN2 = 0.6931471805599453
#: "never closed" / "no window" sentinel for int64 microsecond times
FAR = np.iinfo(np.int64).max
#: moments per tile in the driver's parallel runner
TILE = 256


@intrinsic
def borrow(typingctx: Any, arr: Any) -> Any:
    """A view of ``arr`` (same data, shape, strides) that holds no reference to it.

    Numba counts references to an array atomically, on its owner's shared counter, each time one is
    handed to a function or unpacked from a tuple: the kernel did about seventy such atomic operations
    per moment on arrays both threads read, and the two cores fought over those counters' cache lines
    more than they computed. A borrowed view has no owner to count (a NULL meminfo: numba's reference
    operations skip it), so the drivers borrow every input once per call. Only valid while ``arr``
    itself is alive: the drivers borrow arrays they hold for their whole run. A number is returned as
    it is (family parameters mix arrays and numbers).
    """
    if isinstance(arr, types.Number | types.Boolean):
        return arr(arr), lambda context, builder, signature, args: args[0]
    if not isinstance(arr, types.Array):
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        src = context.make_array(arr)(context, builder, value=args[0])
        out = context.make_array(arr)(context, builder)
        out.meminfo = cgutils.get_null_value(out.meminfo.type)
        out.parent = cgutils.get_null_value(out.parent.type)
        out.nitems = src.nitems
        out.itemsize = src.itemsize
        out.data = src.data
        out.shape = src.shape
        out.strides = src.strides
        return out._getvalue()

    return arr(arr), codegen


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


@njit(cache=True, inline="always")
def decay_steps(out: np.ndarray, hl_inv: np.ndarray, act_t: np.ndarray, lo: int, hi: int) -> None:
    """``out[h, j - lo]``: the factor from activity j's decay weight to activity j - 1's,
    ``exp(-gap * hl_inv[h])`` with the gap in days (rows j - 1 and j only); a lead's first row has no
    earlier one and gets 0.

    The decaying families' ``derive``: an activity's weight at a moment is the next later activity's
    weight times this factor, which does not depend on the moment, so it is computed once per activity
    instead of an ``exp`` per activity and moment. Each product rounds once: a weight is within a few
    ulps per activity of the direct ``exp`` (relative error ~1e-13 after a thousand activities).
    """
    for j in range(lo, hi):
        if j == lo:
            for h in range(hl_inv.shape[0]):
                out[h, 0] = 0.0
            continue
        gap = (act_t[j] - act_t[j - 1]) / DAY_US
        for h in range(hl_inv.shape[0]):
            out[h, j - lo] = np.exp(-gap * hl_inv[h])


@njit(cache=True, inline="always")
def run_end(m_lead: np.ndarray, m_t: np.ndarray, i: int, m1: int) -> tuple[int, int]:
    """End of the run of moments of lead ``m_lead[i]`` that starts at i (at most m1), and its latest time.

    The driver derives a lead's rows once per run, up to the latest moment's rows: a batch's moments
    come grouped by lead, so that is once per lead and tile; any other order is still exact.
    """
    lead = m_lead[i]
    t_last = m_t[i]
    e = i + 1
    while e < m1 and m_lead[e] == lead:
        t_last = max(t_last, m_t[e])
        e += 1
    return e, t_last


@njit(cache=True, inline="always")
def lead_span(act_ptr: np.ndarray, m_lead: np.ndarray, m0: int, m1: int) -> int:
    """The most activities any lead of moments m0..m1 has: the size of the driver's lead-local rows."""
    n = 0
    for i in range(m0, m1):
        n = max(n, act_ptr[m_lead[i] + 1] - act_ptr[m_lead[i]])
    return n


@njit(cache=True, nogil=True)
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


@njit(cache=True, nogil=True)
def is_sorted_by(group: np.ndarray, key: np.ndarray) -> bool:
    """True when rows are already ordered by (group, key): :func:`group_sort` would return the identity.

    One sequential pass; CRM exports grouped by lead (and the event store's replays) skip the sort
    and the gathers behind it.
    """
    for i in range(1, group.shape[0]):
        if group[i] < group[i - 1] or (group[i] == group[i - 1] and key[i] < key[i - 1]):
            return False
    return True


@njit(cache=True, nogil=True)
def group_sort(group: np.ndarray, key: np.ndarray, n_groups: int,
               keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order the rows with ``keep[i]`` by (group, key), stable; returns (their row numbers in that
    order, CSR pointers over groups). Rows not kept are left out (their group may be anything).

    A counting sort by group (O(n)) then a merge sort of each group's slice by key, skipped when the
    slice is already sorted — CRM exports usually are, so this is near-linear where ``np.lexsort``
    pays a full 10M-row comparison sort twice. Leaving rows out here, not by a filtered copy first,
    saves a gather of every array before the one by this order. Kept ``group`` values must be in
    ``0..n_groups-1``.
    """
    n = group.shape[0]
    ptr = np.zeros(n_groups + 1, dtype=np.int64)
    grouped = True
    last = -1
    for i in range(n):
        if keep[i]:
            g = group[i]
            ptr[g + 1] += 1
            if g < last:
                grouped = False
            last = g
    for g in range(n_groups):
        ptr[g + 1] += ptr[g]
    order = np.empty(ptr[n_groups], dtype=np.int64)
    if grouped:  # kept rows already grouped (a lead-major export): the counting sort keeps their order
        j = 0
        for i in range(n):
            if keep[i]:
                order[j] = i
                j += 1
    else:
        fill = ptr[:-1].copy()
        for i in range(n):
            if keep[i]:
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


@njit(cache=True, nogil=True)
def account_times(lead: np.ndarray, lead_acc: np.ndarray, t: np.ndarray, k: np.ndarray, high: np.ndarray,
                  n_acc: int, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per account, the sorted times of all its kept rows and of its high-intent ones (CSR: ptr, times).

    Row i (skipped unless ``keep[i]``) belongs to lead ``lead[i]``, whose account is
    ``lead_acc[lead[i]]`` (-1: none, skipped); ``k[i]`` is its type code, ``high[k]`` whether the
    type is high intent. Only sorted *values* leave this function, so a counting scatter of the times
    and an unstable sort of each account's slice give exactly what a stable sort of the rows gives,
    without an index array, its gathers and a sort key read through it.
    """
    n = lead.shape[0]
    ptr = np.zeros(n_acc + 1, dtype=np.int64)
    hptr = np.zeros(n_acc + 1, dtype=np.int64)
    for i in range(n):
        a = lead_acc[lead[i]] if keep[i] else -1
        if a >= 0:
            ptr[a + 1] += 1
            if high[k[i]]:
                hptr[a + 1] += 1
    for a in range(n_acc):
        ptr[a + 1] += ptr[a]
        hptr[a + 1] += hptr[a]
    out = np.empty(ptr[n_acc], dtype=np.int64)
    hout = np.empty(hptr[n_acc], dtype=np.int64)
    fill = ptr[:-1].copy()
    hfill = hptr[:-1].copy()
    for i in range(n):
        a = lead_acc[lead[i]] if keep[i] else -1
        if a >= 0:
            out[fill[a]] = t[i]
            fill[a] += 1
            if high[k[i]]:
                hout[hfill[a]] = t[i]
                hfill[a] += 1
    _sort_slices(out, ptr)
    _sort_slices(hout, hptr)
    return ptr, out, hptr, hout


@njit(cache=True, nogil=True)
def _sort_slices(values: np.ndarray, ptr: np.ndarray) -> None:
    """Sort ``values[ptr[g]:ptr[g+1]]`` in place for every group g: a natural merge sort.

    An account's slice is the concatenation of its leads' rows, each lead's already in time order
    when the input is (a lead-major export), so it is a few sorted runs: merging runs costs a pass or
    two, where a general sort of the slice costs log2(n) passes. A sorted slice costs one check.
    """
    longest = 0
    for g in range(ptr.shape[0] - 1):
        longest = max(longest, ptr[g + 1] - ptr[g])
    buf = np.empty(longest, dtype=values.dtype)
    bounds = np.empty(longest + 1, dtype=np.int64)
    for g in range(ptr.shape[0] - 1):
        lo, hi = ptr[g], ptr[g + 1]
        n_runs = 1
        bounds[0] = lo
        for j in range(lo + 1, hi):
            if values[j] < values[j - 1]:
                bounds[n_runs] = j
                n_runs += 1
        bounds[n_runs] = hi
        while n_runs > 1:  # merge runs pairwise until one is left
            w = 0
            for r in range(0, n_runs, 2):
                start = bounds[r]
                if r + 1 < n_runs:
                    mid, end = bounds[r + 1], bounds[r + 2]
                    i, j, o = start, mid, 0
                    while i < mid and j < end:
                        if values[j] < values[i]:
                            buf[o] = values[j]
                            j += 1
                        else:
                            buf[o] = values[i]
                            i += 1
                        o += 1
                    while i < mid:
                        buf[o] = values[i]
                        i += 1
                        o += 1
                    # the rest of the right run is already in place
                    for q in range(o):
                        values[start + q] = buf[q]
                bounds[w] = start
                w += 1
            bounds[w] = hi
            n_runs = w
