"""The numba kernel that computes every interest feature and the rule score for scoring moments.

Inputs are per-lead arrays in CSR layout (``ptr[l]:ptr[l+1]`` slices, sorted by time then code), times
as int64 microseconds since the epoch. Each moment ``(lead, t)`` is computed **from scratch** from the
rows with time ``<= t``: it never reuses state from another moment, so a moment's values do not depend
on which other moments are computed with it. That is what makes the online call (one lead, one moment)
bit-identical to the batch row, and what makes the batch embarrassingly parallel and partitionable by
lead. Sums run from the latest activity back to the earliest, in the same order on every path.

The output is a wide float64 matrix with the internal column layout described by :func:`layout`; the
engine maps it to the schema's names.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

DAY_US = 86_400_000_000
LN2 = 0.6931471805599453
#: "never closed" / "no window" sentinel for int64 microsecond times
FAR = np.iinfo(np.int64).max
#: moments per tile in the parallel runner (see ``run_parallel``)
_TILE = 256


def layout(n_types: int, n_windows: int, n_half_lives: int) -> dict[str, int | tuple[int, ...]]:
    """Offsets of the blocks in the kernel's output row (shared by the kernel and the engine)."""
    k, w, h = n_types, n_windows, n_half_lives
    off: dict[str, int | tuple[int, ...]] = {}
    pos = 0
    for name, size in (
        ("cnt", k * w), ("tot_cnt", w), ("hi_cnt", w), ("dec", k * h), ("tot_dec", h), ("n_all", 1),
        ("tot_k", k), ("days_last", 1), ("days_last_hi", 1), ("days_first", 1), ("active", w),
        ("velocity", 1), ("recycled", 1), ("stage_code", 1), ("days_in_stage", 1), ("days_created", 1),
        ("acc_n_leads", 1), ("acc_open", 1), ("acc_had", 1), ("acc_other_30", 1), ("acc_other_hi_30", 1),
        ("rule_act", 1),
    ):
        off[name] = pos
        pos += size
    off["width"] = pos
    return off


@njit(cache=True, inline="always")
def _upper(a: np.ndarray, lo: int, hi: int, v: int) -> int:
    """First index in ``a[lo:hi]`` (sorted) whose value is > v (numpy's searchsorted side='right')."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[mid] <= v:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True)
def _one(
    row: np.ndarray, lead: int, t: int,
    act_ptr: np.ndarray, act_t: np.ndarray, act_k: np.ndarray, act_day: np.ndarray,
    stg_ptr: np.ndarray, stg_t: np.ndarray, stg_k: np.ndarray,
    lead_created: np.ndarray, lead_acc: np.ndarray,
    accl_ptr: np.ndarray, accl_t: np.ndarray,
    acco_ptr: np.ndarray, acco_created: np.ndarray, acco_closed: np.ndarray,
    acca_ptr: np.ndarray, acca_t: np.ndarray, acch_ptr: np.ndarray, acch_t: np.ndarray,
    high: np.ndarray, points: np.ndarray, win_us: np.ndarray, hl_inv: np.ndarray,
    rule_win_us: int, rule_hl_inv: float, vel_recent_us: int, vel_base_us: int,
    recycled_code: int, n_types: int, o: np.ndarray,
) -> None:
    """Fill ``row`` with the features of lead ``lead`` at time ``t`` (µs). ``o`` holds the block offsets."""
    nw = win_us.shape[0]
    nh = hl_inv.shape[0]
    o_cnt, o_tot, o_hi, o_dec, o_tdec, o_all, o_totk = o[0], o[1], o[2], o[3], o[4], o[5], o[6]
    o_last, o_lasthi, o_first, o_active, o_vel, o_rec, o_stage = o[7], o[8], o[9], o[10], o[11], o[12], o[13]
    o_dis, o_dcr, o_nl, o_open, o_had, o_oth, o_othhi, o_rule = (
        o[14], o[15], o[16], o[17], o[18], o[19], o[20], o[21])
    for j in range(o[22]):
        row[j] = 0.0
    lo = act_ptr[lead]
    hi = _upper(act_t, lo, act_ptr[lead + 1], t)
    last_day = -(1 << 62)
    n_recent = 0
    n_base = 0
    own_30 = 0
    w30 = 30 * DAY_US
    rule = 0.0
    last_hi_dt = -1
    for j in range(hi - 1, lo - 1, -1):
        dt = t - act_t[j]
        k = act_k[j]
        dtd = dt / DAY_US
        is_hi = high[k]
        day = act_day[j]
        new_day = day != last_day
        last_day = day
        for w in range(nw):
            if dt < win_us[w]:
                row[o_cnt + k * nw + w] += 1.0
                row[o_tot + w] += 1.0
                if is_hi:
                    row[o_hi + w] += 1.0
                if new_day:
                    row[o_active + w] += 1.0
        for h in range(nh):
            d = np.exp(-dtd * hl_inv[h])
            row[o_dec + k * nh + h] += d
            row[o_tdec + h] += d
        row[o_totk + k] += 1.0
        if is_hi and last_hi_dt < 0:
            last_hi_dt = dt
        if dt < vel_recent_us:
            n_recent += 1
        elif dt < vel_recent_us + vel_base_us:
            n_base += 1
        if dt < w30:
            own_30 += 1
        if dt < rule_win_us:
            if rule_hl_inv > 0.0:
                rule += points[k] * np.exp(-dtd * rule_hl_inv)
            else:
                rule += points[k]
    n = hi - lo
    row[o_all] = n
    nan = np.nan
    if n > 0:
        row[o_last] = (t - act_t[hi - 1]) / DAY_US
        row[o_first] = (t - act_t[lo]) / DAY_US
    else:
        row[o_last] = nan
        row[o_first] = nan
    row[o_lasthi] = last_hi_dt / DAY_US if last_hi_dt >= 0 else nan
    rd = vel_recent_us / DAY_US
    bd = vel_base_us / DAY_US
    prior = 1.0 / (rd + bd)  # one activity over the whole span: no activity at all reads as pace 1.0
    row[o_vel] = (n_recent / rd + prior) / (n_base / bd + prior)
    row[o_rule] = rule
    # lifecycle
    s_lo = stg_ptr[lead]
    s_hi = _upper(stg_t, s_lo, stg_ptr[lead + 1], t)
    rec = 0
    for j in range(s_lo, s_hi):
        if stg_k[j] == recycled_code:
            rec += 1
    row[o_rec] = rec
    if s_hi > s_lo:
        row[o_stage] = stg_k[s_hi - 1]
        row[o_dis] = (t - stg_t[s_hi - 1]) / DAY_US
    else:
        row[o_stage] = -1.0
        row[o_dis] = nan
    row[o_dcr] = (t - lead_created[lead]) / DAY_US
    # account rollups
    a = lead_acc[lead]
    if a < 0:
        row[o_nl] = nan
        row[o_open] = nan
        row[o_had] = nan
        row[o_oth] = nan
        row[o_othhi] = nan
    else:
        row[o_nl] = _upper(accl_t, accl_ptr[a], accl_ptr[a + 1], t) - accl_ptr[a]
        had = 0.0
        opn = 0.0
        for j in range(acco_ptr[a], acco_ptr[a + 1]):
            if acco_created[j] <= t:
                had = 1.0
                if acco_closed[j] > t:
                    opn = 1.0
        row[o_had] = had
        row[o_open] = opn
        p0, p1 = acca_ptr[a], acca_ptr[a + 1]
        all_30 = _upper(acca_t, p0, p1, t) - _upper(acca_t, p0, p1, t - w30)
        row[o_oth] = all_30 - own_30
        own_hi_30 = 0
        for j in range(hi - 1, lo - 1, -1):
            if t - act_t[j] >= w30:
                break
            if high[act_k[j]]:
                own_hi_30 += 1
        q0, q1 = acch_ptr[a], acch_ptr[a + 1]
        row[o_othhi] = (_upper(acch_t, q0, q1, t) - _upper(acch_t, q0, q1, t - w30)) - own_hi_30


@njit(cache=True, parallel=True)
def run_parallel(
    out: np.ndarray, m_lead: np.ndarray, m_t: np.ndarray,
    act_ptr: np.ndarray, act_t: np.ndarray, act_k: np.ndarray, act_day: np.ndarray,
    stg_ptr: np.ndarray, stg_t: np.ndarray, stg_k: np.ndarray,
    lead_created: np.ndarray, lead_acc: np.ndarray,
    accl_ptr: np.ndarray, accl_t: np.ndarray,
    acco_ptr: np.ndarray, acco_created: np.ndarray, acco_closed: np.ndarray,
    acca_ptr: np.ndarray, acca_t: np.ndarray, acch_ptr: np.ndarray, acch_t: np.ndarray,
    high: np.ndarray, points: np.ndarray, win_us: np.ndarray, hl_inv: np.ndarray,
    rule_win_us: int, rule_hl_inv: float, vel_recent_us: int, vel_base_us: int,
    recycled_code: int, n_types: int, o: np.ndarray,
) -> None:
    """All moments, in parallel over moments (each row is independent: no reduction, no order effect).

    ``out`` is (width, n_moments): one contiguous array per feature, ready to become a column.
    """
    n = m_lead.shape[0]
    width = out.shape[0]
    n_tiles = (n + _TILE - 1) // _TILE
    for b in prange(n_tiles):
        # compute a tile of moments row-wise, then write it out column-wise: each feature column gets
        # _TILE contiguous values instead of one scattered write per moment and feature
        m0 = b * _TILE
        m1 = min(m0 + _TILE, n)
        tile = np.empty((_TILE, width), dtype=np.float64)
        for i in range(m1 - m0):
            m = m0 + i
            _one(tile[i], m_lead[m], m_t[m], act_ptr, act_t, act_k, act_day, stg_ptr, stg_t, stg_k, lead_created,
                 lead_acc, accl_ptr, accl_t, acco_ptr, acco_created, acco_closed, acca_ptr, acca_t, acch_ptr,
                 acch_t, high, points, win_us, hl_inv, rule_win_us, rule_hl_inv, vel_recent_us, vel_base_us,
                 recycled_code, n_types, o)
        for j in range(width):
            for i in range(m1 - m0):
                out[j, m0 + i] = tile[i, j]


@njit(cache=True)
def run_serial(
    out: np.ndarray, m_lead: np.ndarray, m_t: np.ndarray,
    act_ptr: np.ndarray, act_t: np.ndarray, act_k: np.ndarray, act_day: np.ndarray,
    stg_ptr: np.ndarray, stg_t: np.ndarray, stg_k: np.ndarray,
    lead_created: np.ndarray, lead_acc: np.ndarray,
    accl_ptr: np.ndarray, accl_t: np.ndarray,
    acco_ptr: np.ndarray, acco_created: np.ndarray, acco_closed: np.ndarray,
    acca_ptr: np.ndarray, acca_t: np.ndarray, acch_ptr: np.ndarray, acch_t: np.ndarray,
    high: np.ndarray, points: np.ndarray, win_us: np.ndarray, hl_inv: np.ndarray,
    rule_win_us: int, rule_hl_inv: float, vel_recent_us: int, vel_base_us: int,
    recycled_code: int, n_types: int, o: np.ndarray,
) -> None:
    """Same as :func:`run_parallel` without the thread pool: the online path (a handful of moments)."""
    row = np.empty(out.shape[0], dtype=np.float64)
    for m in range(m_lead.shape[0]):
        _one(row, m_lead[m], m_t[m], act_ptr, act_t, act_k, act_day, stg_ptr, stg_t, stg_k, lead_created, lead_acc,
             accl_ptr, accl_t, acco_ptr, acco_created, acco_closed, acca_ptr, acca_t, acch_ptr, acch_t,
             high, points, win_us, hl_inv, rule_win_us, rule_hl_inv, vel_recent_us, vel_base_us,
             recycled_code, n_types, o)
        out[:, m] = row


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
