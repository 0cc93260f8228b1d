"""Batch scoring's reasons: :func:`training.reasons.top_reasons` for every row of a chunk at once.

The per-row rule (:mod:`training.reasons`) stays the definition; here it is computed for a chunk: the
concept sums and their order compiled (:func:`concept_sums`), the sentences of the (row, concept) cells
the walk may read worded once per column and *shown* value (:func:`concept_text_ids`, with
:mod:`training.reason_keys`), the walk compiled over sentence ids (:mod:`training.reason_select`), and
the JSON lists built column by column (:func:`json_lists`). ``tests/test_batch_vectorised.py`` holds
every piece to the one-row rule.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from leadscore.training.reasons import ReasonPlan


def concept_sums(plan: ReasonPlan, contrib: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For many rows at once (``contrib``: rows x columns): each concept's summed contribution, added in
    column order exactly as :func:`~training.reasons.top_reasons`' ``np.bincount`` does for one row (the
    same bits), and each row's concepts by decreasing absolute sum (stable). Batch scoring's per-row numpy
    calls cost more than the walk of the trees."""
    c = np.atleast_2d(np.asarray(contrib, dtype=np.float64))
    if not np.isnan(c).any():  # compiled (training.reason_select): the same bits, no per-column numpy call
        from leadscore.training.reason_select import concept_order

        return concept_order(np.ascontiguousarray(c), plan.concept_of, len(plan.concepts))  # type: ignore[no-any-return]
    sums = np.zeros((len(c), len(plan.concepts)))
    for j, concept in enumerate(plan.concept_of.tolist()):
        sums[:, concept] += c[:, j]
    return sums, np.argsort(-np.abs(sums), axis=1, kind="stable")



#: a (row, concept) sentence id not computed (:func:`concept_text_ids` with ``need``)
NOT_WORDED = -2


def concept_text_ids(plan: ReasonPlan, frame: pd.DataFrame, need: np.ndarray, index: dict[str, int],
                     block: np.ndarray | None = None,
                     factorize: Callable[[str], tuple[np.ndarray, Any]] | None = None,
                     sums: np.ndarray | None = None) -> np.ndarray:
    """The sentence of each concept in each row where ``need`` (rows x concepts) holds, as ids into
    ``index`` (sentence -> id, extended here): -1 where the concept words nothing there (its columns'
    values are silent zeros), :data:`NOT_WORDED` where not needed.

    A concept's id in a row is its first member's that words something, as
    :meth:`ReasonPlan.concept_text` picks it: all needed (row, concept) cells try their first member at
    once, those it leaves silent their second, and so on. The sentence of a (column, value) depends on
    nothing else, and a batch holds few distinct *shown* values per column (counts, categories, days,
    values to 2 decimals), so float values are grouped by column and shown value
    (:func:`training.reason_keys.display_keys`) and each group worded once; other values (categories, and
    the few floats the keys leave exact) once per distinct (column, value). Equal sentences share an id:
    :func:`~training.reasons.top_reasons` merges them. ``block``: the frame's schema columns as float64 (rows x columns, the
    bundle's encoding: numeric columns converted as ``to_numpy(float64)`` converts them, which words them
    as the frame's values do); without it the frame's float64 columns are read. ``factorize``: a
    string column's ``pd.factorize(column, use_na_sentinel=True)`` by name, kept by the caller for the
    batch (:meth:`training.linear.FrameColumns.factorized`; default: computed here). ``sums``: the
    concepts' sums (rows x concepts); a negative one worded by a buying signal is -1 (:meth:`ReasonPlan.against`).
    """
    from leadscore.training.reason_keys import display_keys, first_rows, unit_codes  # numba: when first used

    if factorize is None:
        factorize = _factorizer(frame)
    out = np.full(need.shape, NOT_WORDED, dtype=np.int64)
    rows, concepts = np.nonzero(need)
    n_cols = len(plan.columns)
    width = max((len(m) for m in plan.members), default=0)
    member = np.full((len(plan.members), width), -1, dtype=np.int64)
    for c, m in enumerate(plan.members):
        member[c, : len(m)] = m
    floats = np.array([c.numeric if block is not None else frame[c.name].dtype == np.float64
                       for c in plan.columns], dtype=bool)
    units = unit_codes([c.unit for c in plan.columns])
    only_for = np.array([c.only_for for c in plan.columns], dtype=bool)
    negative = np.zeros(len(rows), dtype=bool) if sums is None or not only_for.any() else sums[rows, concepts] < 0.0
    ids = np.full(len(rows), -1, dtype=np.int64)
    todo = np.arange(len(rows))
    for level in range(width):
        todo = todo[member[concepts[todo], level] >= 0]
        if not len(todo):
            break
        r, j = rows[todo], member[concepts[todo], level]
        got = np.empty(len(todo), dtype=np.int64)
        present = np.ones(len(todo), dtype=bool)
        is_float = floats[j]
        at = np.flatnonzero(is_float)
        if len(at):
            values = block[r[at], j[at]] if block is not None else _gather(frame, plan, r[at], j[at])
            present[at] = values == values
            key, exact = display_keys(units[j[at]], values)
            keyed = np.flatnonzero(~exact)
            if len(keyed):
                codes, uniques = pd.factorize(key[keyed])
                codes, uniques = pd.factorize(codes * n_cols + j[at][keyed])
                first = first_rows(codes, len(uniques))
                got[at[keyed]] = _word_keyed(plan, index, j[at][keyed][first].tolist(), key[keyed][first].tolist(),
                                             values[keyed][first].tolist())[codes]
            other = at[exact]
        else:
            other = at
        other = np.concatenate([other, np.flatnonzero(~is_float)])
        for col in np.unique(j[other]).tolist():  # by value: categories, and floats left exact
            sel = other[j[other] == col]
            if floats[col]:
                vals = block[r[sel], col] if block is not None else frame[plan.columns[col].name].to_numpy()[r[sel]]
                codes, uniques = pd.factorize(vals, use_na_sentinel=True)
            else:  # a whole column factorised once per batch: converting a string column row by row is slow
                whole, uniques = factorize(plan.columns[col].name)
                codes = whole[r[sel]]
                present[sel] = codes >= 0
            distinct = [*uniques.tolist(), None]  # the last: a missing value (code -1)
            got[sel] = _word(plan, index, [col] * len(distinct), distinct)[codes]
        silent = got < 0
        got[~silent & negative[todo] & only_for[j] & present] = -1  # a buying signal against: not worded
        ids[todo] = got
        todo = todo[silent]
    out[rows, concepts] = ids
    return out


def _factorizer(frame: pd.DataFrame) -> Callable[[str], tuple[np.ndarray, Any]]:
    """``pd.factorize`` of a column of ``frame`` by name, each computed once."""
    done: dict[str, tuple[np.ndarray, Any]] = {}

    def factorize(name: str) -> tuple[np.ndarray, Any]:
        if name not in done:
            done[name] = pd.factorize(frame[name], use_na_sentinel=True)
        return done[name]

    return factorize


def _gather(frame: pd.DataFrame, plan: ReasonPlan, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The frame's float64 values at (rows, cols) pairs, one column read per distinct column."""
    out = np.empty(len(rows))
    for col in np.unique(cols).tolist():
        sel = np.flatnonzero(cols == col)
        out[sel] = frame[plan.columns[col].name].to_numpy()[rows[sel]]
    return out


def _word_keyed(plan: ReasonPlan, index: dict[str, int], cols: list[int], keys: list[int],
                values: list[float]) -> np.ndarray:
    """:func:`_word` of values that word as their display key says (:func:`training.reason_keys.display_keys`),
    each (column, key) worded once per plan (:attr:`ReasonPlan.memo`)."""
    memo = plan.memo
    if len(memo) > _MEMO_SIZE:
        memo.clear()
    out = np.empty(len(cols), dtype=np.int64)
    for i, (j, k, v) in enumerate(zip(cols, keys, values, strict=True)):
        t = memo.get((j, k), _UNSEEN)
        if t is _UNSEEN:
            t = memo[(j, k)] = plan.text(j, v)
        out[i] = -1 if t is None else index.setdefault(t, len(index))  # type: ignore[arg-type]
    return out


#: :attr:`ReasonPlan.memo` entries at most (a few MB of sentences)
_MEMO_SIZE = 100_000
_UNSEEN = object()


def _word(plan: ReasonPlan, index: dict[str, int], cols: list[int], values: list[Any]) -> np.ndarray:
    """The sentence id of each (column, value) (-1: it says nothing), new sentences added to ``index``."""
    return np.asarray([-1 if (t := plan.text(j, v)) is None else index.setdefault(t, len(index))
                       for j, v in zip(cols, values, strict=True)], dtype=np.int64)


def batch_top_ids(plan: ReasonPlan, frame: pd.DataFrame, contrib: np.ndarray, k: int,
                  window: int | None = None, block: np.ndarray | None = None,
                  factorize: Callable[[str], tuple[np.ndarray, Any]] | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """:func:`~training.reasons.top_reasons`' sentences of every row of ``frame`` (``contrib``: rows x schema columns), as
    ids (rows x ``k``, -1 pads a short side) into the returned sentences: positive, negative, sentences.

    The same sums (:func:`concept_sums`) and the same walk (:func:`training.reason_select.select_top`).
    A row's walk rarely goes past its ``window`` (default ``4k``) strongest concepts, so only those are
    worded first; the rows whose walk went further are worded in full and walked again. ``block``: the
    frame's columns as float64, ``factorize`` its string columns' factorisations (:func:`concept_text_ids`).
    """
    from leadscore.training.reason_select import select_top  # numba: compiled when first used

    sums, order = concept_sums(plan, contrib)
    order = np.ascontiguousarray(order, dtype=np.int64)
    index: dict[str, int] = {}
    need = np.zeros(sums.shape, dtype=bool)
    np.put_along_axis(need, order[:, : 4 * k if window is None else window], True, axis=1)
    need &= sums != 0.0  # a zero sum ends the walk before its sentence is read
    factorize = _factorizer(frame) if factorize is None else factorize
    ids = concept_text_ids(plan, frame, need, index, block, factorize, sums)
    pos, neg, short = select_top(sums, order, ids, k)
    if short.any():
        rows = np.flatnonzero(short)
        rest = np.zeros(sums.shape, dtype=bool)
        rest[rows] = (sums[rows] != 0.0) & (ids[rows] == NOT_WORDED)
        ids = np.where(rest, concept_text_ids(plan, frame, rest, index, block, factorize, sums), ids)
        pos[rows], neg[rows], short = select_top(sums[rows], order[rows], ids[rows], k)
        assert not short.any()
    return pos, neg, list(index)


def json_lists(ids: np.ndarray, texts: Sequence[str]) -> np.ndarray:
    """Each row of ``ids`` (rows x k sentence ids, -1 padding at the end) as the JSON text of its list of
    sentences, ``json.dumps(list)`` exactly: each sentence shown is quoted once, and the lists are
    concatenated column by column as object arrays (one C loop per column, no per-row Python)."""
    import json

    ids = np.asarray(ids, dtype=np.int64)
    if not len(ids):
        return np.empty(0, dtype=object)
    used = np.unique(ids[ids >= 0])  # a batch words many sentences; its lists show a part of them
    quoted = np.full(len(texts) + 1, "", dtype=object)  # the last: the padding (-1), nothing
    quoted[used] = [json.dumps(texts[t]) for t in used.tolist()]
    following = np.full(len(texts) + 1, "", dtype=object)
    following[used] = [", " + q for q in quoted[used].tolist()]
    out = quoted[ids[:, 0]] if ids.shape[1] else np.full(len(ids), "", dtype=object)
    started = ids[:, 0] >= 0 if ids.shape[1] else np.zeros(len(ids), dtype=bool)
    for col in ids.T[1:]:
        out = out + following[col]
        first = ~started & (col >= 0)  # a list whose first sentence comes after a -1: no separator
        if first.any():
            out[first] = quoted[col[first]]
        started |= col >= 0
    return np.asarray("[" + out + "]", dtype=object)
