"""The batch reasons of :func:`training.reasons.top_reasons`, one compiled pass per chunk (numba).

Per row the rule is: sum the contributions per concept, walk the concepts by decreasing absolute sum,
word each by its first member that says something, merge equal sentences, stop once both sides hold
``k``. A batch words the same few thousand (column, shown value) pairs over and over, so the sentences are
kept in a table keyed by cell: ``(column, display key)`` for a float (:func:`training.reason_keys.display_key`;
its exact bits where the key cannot stand for it, under ``column + n_columns``), ``(column, value id)``
for any other value (ids of the distinct values a column showed, -1 missing). The table maps a key to a
sentence id (-1: the value says nothing) and lives with the plan across chunks
(:class:`training.reason_batch.Sentences`).

:func:`walk` runs the whole rule per row (sums, order, walk, the sides sorted) in parallel over rows with
the table read-only. A row whose walk reaches a cell not in the table stops there and records the cells
it will need (that one and those of the next concepts in its order, :data:`MISS_SLOTS` at most); the
caller words them, adds them to the table and walks those rows again. The comparisons and float additions
are those of :func:`training.reasons._select` in the same order, so the chosen sentences are the same
(``tests/test_batch_vectorised.py``). Imported when first used: numba compiles on first call (cached on disk).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange, uint64

from leadscore.training.reason_keys import display_key
from leadscore.training.reason_select import concept_rows

#: a table slot's ``keys2`` when empty, and :func:`lookup`'s answer for a key not in the table
EMPTY = -1
ABSENT = -3
#: how a plan column's value is read: from the float block (keyed by its display key) or by value id
FLOAT, VALUE = 0, 1
#: cells a row may record per walk as needed (more are recorded by its next walk)
MISS_SLOTS = 48
#: rows per block of :func:`walk` (one :func:`row_walk` call, its scratch arrays allocated once; blocks are
#: handed to the threads as they free up)
_BLOCK = 64
_M1 = -7046029254386353131  # 0x9E3779B97F4A7C15 as int64
_M2 = -4417276706812531889  # 0xC2B2AE3D27D4EB4F as int64


@njit(cache=True)
def _slot(k1: int, k2: int, mask: int) -> int:
    h = k1 * _M1 + k2 * _M2
    h ^= h >> 31
    return h & mask


@njit(cache=True)
def lookup(table: np.ndarray, k1: int, k2: int) -> int:
    """The sentence id stored for ``(k1, k2)``, or :data:`ABSENT` (open addressing, linear probing; a slot is
    one row ``(k1, k2, id)`` of ``table``: one cache line per probe)."""
    mask = len(table) - 1
    s = uint64(_slot(k1, k2, mask))  # unsigned: no test for a negative index on every probe
    while True:
        if table[s, 1] == EMPTY:
            return ABSENT
        if table[s, 0] == k1 and table[s, 1] == k2:
            return table[s, 2]  # type: ignore[no-any-return]
        s = uint64((s + uint64(1)) & uint64(mask))


@njit(cache=True)
def insert(table: np.ndarray, k1: np.ndarray, k2: np.ndarray, v: np.ndarray) -> int:
    """Store each ``(k1, k2) -> v`` (an existing key keeps its value); returns how many were new. The
    caller keeps the table at most half full."""
    mask = len(table) - 1
    added = 0
    for i in range(len(k1)):
        s = _slot(k1[i], k2[i], mask)
        while table[s, 1] != EMPTY and not (table[s, 0] == k1[i] and table[s, 1] == k2[i]):
            s = (s + 1) & mask
        if table[s, 1] == EMPTY:
            table[s, 0], table[s, 1], table[s, 2] = k1[i], k2[i], v[i]
            added += 1
    return added


@njit(cache=True)
def value_key(j: int, n_columns: int, is_float: bool, unit: int, x: float, x_bits: int,
              value_id: int) -> tuple[int, int]:
    """The table key of a value of column ``j`` (module docstring): ``x`` (its bits ``x_bits``) of unit code
    ``unit`` when ``is_float``, else its value id. Scalars only: the walk calls it per cell, and a compiled
    call handed arrays (each reference counted, in and out) cost ~10x the key itself."""
    if is_float:
        key, exact = display_key(unit, x)
        if exact:
            return x_bits, j + n_columns
        return key, j
    return value_id, j


@njit(cache=True)
def cell_key(i: int, j: int, block: np.ndarray, bits: np.ndarray, vid: np.ndarray, slot: np.ndarray,
             kind: np.ndarray, unit: np.ndarray) -> tuple[int, int]:
    """The table key of row ``i``'s value of column ``j`` (:func:`value_key`)."""
    is_float = kind[j] == FLOAT
    return value_key(j, len(kind), is_float, unit[j], block[i, j], bits[i, j], -1 if is_float else vid[i, slot[j]])


@njit(cache=True)
def cell_keys(rows: np.ndarray, cols: np.ndarray, block: np.ndarray, bits: np.ndarray, vid: np.ndarray,
              slot: np.ndarray, kind: np.ndarray, unit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`cell_key` of each (row, column) pair."""
    k1 = np.empty(len(rows), dtype=np.int64)
    k2 = np.empty(len(rows), dtype=np.int64)
    for p in range(len(rows)):
        k1[p], k2[p] = cell_key(rows[p], cols[p], block, bits, vid, slot, kind, unit)
    return k1, k2


@njit(cache=True, parallel=True, nogil=True)
def walk(rows: np.ndarray, contrib: np.ndarray, given: bool, sums: np.ndarray, order: np.ndarray,
         block: np.ndarray, bits: np.ndarray, vid: np.ndarray, slot: np.ndarray, kind: np.ndarray,
         unit: np.ndarray, only_for: np.ndarray, silent: np.ndarray, concept_of: np.ndarray, member: np.ndarray,
         k: int, window: int, table: np.ndarray, pos: np.ndarray, neg: np.ndarray, misses: np.ndarray) -> None:
    """Each row of ``rows``: its concept sums and order (into ``sums``/``order``,
    :func:`~training.reason_select.concept_rows`; unless ``given``: then read from them), the walk
    over the table's sentence ids and the sentence ids of its ``k`` strongest
    reasons for and against into ``pos``/``neg`` (-1 pads a short side); or, when the walk reached a cell
    not in the table, the columns of the cells it needs into ``misses`` (-1 pads; ``misses[i, 0] >= 0``
    marks the row to walk again; a row without a miss has ``misses[i, 0] = -1`` and the rest unset).
    ``member``: per concept its columns by rank, -1 padded; ``silent``: per column whether a float zero
    says nothing (:meth:`ReasonPlan.text`: a zero count; not looked up)."""
    n_blocks = (len(rows) + _BLOCK - 1) // _BLOCK
    for b in prange(n_blocks):
        row_walk(rows, b * _BLOCK, min(len(rows), (b + 1) * _BLOCK), contrib, given, sums, order, block, bits, vid,
                 slot, kind, unit, only_for, silent, concept_of, member, k, window, table, pos, neg, misses)


@njit(cache=True)
def row_walk(rows: np.ndarray, lo: int, hi: int, contrib: np.ndarray, given: bool, sums: np.ndarray,
             order: np.ndarray, block: np.ndarray, bits: np.ndarray, vid: np.ndarray, slot: np.ndarray,
             kind: np.ndarray, unit: np.ndarray, only_for: np.ndarray, silent: np.ndarray, concept_of: np.ndarray,
             member: np.ndarray, k: int, window: int, table: np.ndarray, pos: np.ndarray, neg: np.ndarray,
             misses: np.ndarray) -> None:
    """:func:`walk` of the rows ``rows[lo:hi]``. Batch scoring's pass also runs it on each block of rows as
    soon as their contributions are made (:func:`training.batch_pass.target_pass`). A block per call, not a
    row: a compiled call is handed its ~20 arrays reference counted, in and out (at a row per call, a
    fifth of the walk)."""
    n_concepts = sums.shape[1]
    width = member.shape[1]
    n_columns = len(kind)
    item_id = np.empty(n_concepts, dtype=np.int64)
    item_sum = np.empty(n_concepts, dtype=np.float64)
    used = np.empty(n_concepts, dtype=np.bool_)
    if not given:  # the sums and the whole order (counted: cheaper than sorting a prefix then, for one row in 7, all)
        concept_rows(rows, lo, hi, contrib, concept_of, sums, order)
    for r in range(lo, hi):
        i = uint64(rows[r])  # indices read from arrays, unsigned: numba tests a signed one for a negative value
        misses[i, 0] = -1  # no miss (a row that misses pads its recorded cells below)
        m = 0
        n_pos = 0
        n_neg = 0
        stop = -1  # the position of the concept whose wording is not known
        for p in range(n_concepts):
            c = uint64(order[i, p])
            s = sums[i, c]
            if s == 0.0:
                break
            t = -1
            jj = uint64(0)
            for q in range(width):
                j = member[c, q]
                if j < 0:
                    break
                uj = uint64(j)
                if silent[uj] and block[i, uj] == 0.0:  # a zero count says nothing: no look-up
                    continue
                is_float = kind[uj] == FLOAT  # cell_key's reads, here: a compiled call handed arrays is slow
                k1, k2 = value_key(j, n_columns, is_float, unit[uj], block[i, uj], bits[i, uj],
                                   -1 if is_float else vid[i, uint64(slot[uj])])
                got = lookup(table, k1, k2)
                if got == ABSENT:
                    stop = p
                    break
                if got >= 0:
                    t = got
                    jj = uj
                    break
            if stop >= 0:
                break
            if t < 0:
                continue
            if s < 0.0 and only_for[jj]:  # a buying signal counted against: not worded when present
                present = block[i, jj] == block[i, jj] if kind[jj] == FLOAT else vid[i, uint64(slot[jj])] >= 0
                if present:
                    continue
            found = -1
            for q in range(m):
                if item_id[q] == t:
                    found = q
                    break
            if found < 0:
                found = m
                item_id[m] = t
                item_sum[m] = 0.0
                m += 1
            before = item_sum[found]  # the sides counted as the one-row rule recounts them: a merge can move an item
            item_sum[found] += s
            after = item_sum[found]
            n_pos += (after > 0) - (before > 0)
            n_neg += (after < 0) - (before < 0)
            if n_pos >= k and n_neg >= k:
                break
        for q in range(k):
            pos[i, q] = -1
            neg[i, q] = -1
        if stop >= 0:  # record the cells of this concept and the next ones that the table lacks
            n_miss = 0
            for p in range(stop, min(n_concepts, max(window, stop + 1))):
                c = order[i, p]
                if sums[i, c] == 0.0:
                    break
                for q in range(width):
                    j = member[c, q]
                    if j < 0 or n_miss == misses.shape[1]:
                        break
                    if silent[j] and block[i, j] == 0.0:
                        continue
                    k1, k2 = cell_key(i, j, block, bits, vid, slot, kind, unit)
                    got = lookup(table, k1, k2)
                    if got == ABSENT:
                        misses[i, n_miss] = j
                        n_miss += 1
                    elif got >= 0:
                        break
            for q in range(n_miss, misses.shape[1]):
                misses[i, q] = -1
            continue
        # each side by strength, ties in walk order (Python's stable sort); strict comparisons keep the first
        used[:m] = False
        for side in range(2):
            out = pos if side == 0 else neg
            for q in range(k):
                best = -1
                for u in range(m):
                    if used[u] or not (item_sum[u] > 0 if side == 0 else item_sum[u] < 0):
                        continue
                    if best < 0 or (item_sum[u] > item_sum[best] if side == 0 else item_sum[u] < item_sum[best]):
                        best = u
                if best < 0:
                    break
                used[best] = True
                out[i, q] = item_id[best]


__all__ = ["ABSENT", "EMPTY", "FLOAT", "MISS_SLOTS", "VALUE", "cell_keys", "insert", "lookup", "row_walk", "value_key",
           "walk"]
