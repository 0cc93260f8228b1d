"""Batch scoring's reasons: :func:`training.reasons.top_reasons` for every row of a chunk at once.

The per-row rule (:mod:`training.reasons`) stays the definition; here it runs compiled for a chunk
(:mod:`training.reason_walk`: the concept sums, their order and the walk per row, in parallel) over the
plan's table of sentences (:class:`Sentences`: each distinct (column, *shown* value) worded once per run,
:mod:`training.reason_keys`), and the JSON lists are built column by column (:func:`json_lists`).
``tests/test_batch_vectorised.py`` holds every piece to the one-row rule.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import cache, cached_property
from json.encoder import encode_basestring_ascii
from typing import Any

import numpy as np
import pandas as pd

from leadscore.training.reasons import ReasonPlan


class Sentences:
    """A plan's batch wording (:mod:`training.reason_walk`), kept across the chunks of a run (a CRM's chunks
    show mostly the same values): the table of cell keys to sentence ids, the sentences, and per column
    read by value the ids of the values it showed. Bounded: past :data:`_MEMO_SIZE` cells it starts over
    at the next batch. One batch at a time (``lock``)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        from leadscore.training.reason_walk import EMPTY

        self.table = np.zeros((1 << 12, 3), dtype=np.int64)  # per slot: key, key, sentence id
        self.table[:, 1] = EMPTY
        self.size = 0
        self.texts: list[str] = []
        self.quoted: list[str] = []  # each sentence as json.dumps quotes it (training.score_columns)
        self._pieces: tuple[np.ndarray, np.ndarray] | None = None  # pieces(), built when first asked after a change
        self.index: dict[str, int] = {}
        self.value_ids: dict[int, dict[Any, int]] = {}
        self.values: dict[int, list[Any]] = {}
        self.coded: dict[tuple[int, int], tuple[Any, np.ndarray]] = {}  # category_ids(), by column and dictionary

    def add(self, k1: np.ndarray, k2: np.ndarray, texts: Sequence[str | None]) -> None:
        """Store each cell key's sentence (None: the value says nothing)."""
        from leadscore.training.reason_walk import EMPTY, insert

        ids = np.empty(len(texts), dtype=np.int64)
        for p, text in enumerate(texts):
            got = -1 if text is None else self.index.get(text)
            if got is None:
                got = self.index[text] = len(self.texts)  # type: ignore[index]
                self.texts.append(text)  # type: ignore[arg-type]
                self.quoted.append(encode_basestring_ascii(text))  # type: ignore[arg-type]
                self._pieces = None
            ids[p] = got
        if 2 * (self.size + len(k1)) > len(self.table):  # grow, re-inserting what is stored
            live = self.table[self.table[:, 1] != EMPTY]
            cap = len(self.table)
            while 2 * (self.size + len(k1)) > cap:
                cap *= 2
            self.table = np.zeros((cap, 3), dtype=np.int64)
            self.table[:, 1] = EMPTY
            insert(self.table, live[:, 0].copy(), live[:, 1].copy(), live[:, 2].copy())
        self.size += insert(self.table, k1, k2, ids)

    def pieces(self) -> tuple[np.ndarray, np.ndarray]:
        """Every sentence quoted, in one byte buffer with their offsets
        (:func:`training.json_lists.quoted_buffers`), kept until one is added: the JSON lists of a batch are
        copied from it by sentence id (:func:`training.score_columns.json_list_column`)."""
        from leadscore.training.json_lists import quoted_buffers

        if self._pieces is None:
            self._pieces = quoted_buffers(self.quoted)
        return self._pieces

    def category_ids(self, j: int, dtype: pd.CategoricalDtype) -> np.ndarray:
        """For column ``j`` held as a categorical of ``dtype``: the id of each category's value, then -1 (a
        missing value, code -1), so ``category_ids(j, dtype)[codes]`` is :meth:`value_column` of the column.
        Worked out once per dictionary (batch scoring's chunks share the run's), then kept."""
        got = self.coded.get((j, id(dtype)))
        if got is not None and got[0] is dtype:  # the dictionary held: its id not reused
            return got[1]
        categories = np.asarray(dtype.categories, dtype=object)
        ids = np.append(self.value_column(j, (np.arange(len(categories)), categories)), -1)
        self.coded[(j, id(dtype))] = (dtype, ids)
        return ids

    def value_column(self, j: int, factorized: tuple[np.ndarray, Any]) -> np.ndarray:
        """Column ``j``'s values (``pd.factorize`` of it) as ids of the distinct values it showed (-1 missing)."""
        ids, values = self.value_ids.setdefault(j, {}), self.values.setdefault(j, [])
        codes, uniques = factorized
        got = []
        for v in uniques.tolist():
            t = ids.get(v)
            if t is None:
                t = ids[v] = len(values)
                values.append(v)
            got.append(t)
        return np.asarray([*got, -1], dtype=np.int64)[codes]


#: cells of :class:`Sentences` at most (a few MB of sentences and keys)
_MEMO_SIZE = 100_000


def _sentences(plan: ReasonPlan) -> Sentences:
    """The plan's :class:`Sentences` (in :attr:`ReasonPlan.memo`)."""
    got = plan.memo.get("sentences")
    if got is None:
        got = plan.memo.setdefault("sentences", Sentences())
    return got  # type: ignore[no-any-return]


def _factorizer(frame: pd.DataFrame) -> Callable[[str], tuple[np.ndarray, Any]]:
    """``pd.factorize`` of a column of ``frame`` by name, each computed once."""
    done: dict[str, tuple[np.ndarray, Any]] = {}

    def factorize(name: str) -> tuple[np.ndarray, Any]:
        if name not in done:
            done[name] = pd.factorize(frame[name], use_na_sentinel=True)
        return done[name]

    return factorize


def batch_top_ids(plan: ReasonPlan, frame: pd.DataFrame, contrib: np.ndarray, k: int,
                  window: int | None = None, block: np.ndarray | None = None,
                  factorize: Callable[[str], tuple[np.ndarray, Any]] | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """:func:`batch_reasons` with the ids renumbered over the sentences shown (and those alone returned)."""
    pos, neg, texts, _ = batch_reasons(plan, frame, contrib, k, window, block, factorize)
    return _compact(pos, neg, texts)


def batch_reasons(plan: ReasonPlan, frame: pd.DataFrame, contrib: np.ndarray, k: int,
                  window: int | None = None, block: np.ndarray | None = None,
                  factorize: Callable[[str], tuple[np.ndarray, Any]] | None = None,
                  ) -> tuple[np.ndarray, np.ndarray, list[str], Any]:
    """:func:`~training.reasons.top_reasons`' sentences of every row of ``frame`` (``contrib``: rows x schema columns), as
    ids (rows x ``k``, -1 pads a short side) into the returned sentences: positive, negative, sentences (the
    plan's, as many as it holds now), and those sentences' :meth:`Sentences.pieces` (the JSON lists are
    joined from them: each sentence quoted once per run, not once per chunk).

    The rule runs compiled over the plan's table of sentences (:class:`BatchWalk`). ``block``: the frame's
    schema columns as float64 (rows x columns, the bundle's encoding: numeric columns converted as
    ``to_numpy(float64)`` converts them, which words them as the frame's values do; string columns are read
    by value); without it the frame's float64 columns are read from the frame and the others by value.
    ``factorize``: a column's ``pd.factorize(column, use_na_sentinel=True)`` by name, kept by the caller for
    the batch (:meth:`training.linear.FrameColumns.factorized`; default: computed here).
    """
    n, n_cols = len(frame), len(plan.columns)
    if block is None:
        floats = np.array([frame[c.name].dtype == np.float64 for c in plan.columns], dtype=bool)
        block = np.zeros((n, n_cols))
        if floats.any():
            block[:, floats] = frame[[c.name for c, f in zip(plan.columns, floats, strict=True) if f]].to_numpy(np.float64)
    else:
        floats = None
    block = np.asarray(block, dtype=np.float64)  # either memory order (explain_block hands out a row-major view)
    contrib = np.ascontiguousarray(np.atleast_2d(contrib), dtype=np.float64)
    with BatchWalk.open(plan, frame, k, window, floats, factorize) as w:
        return w.finish(contrib, block)


class BatchWalk:
    """One batch's reasons walk (:func:`training.reason_walk.walk`) set up over the plan's sentence table:
    the frame's by-value columns as value ids, the outputs allocated, the table locked (:meth:`open`) from
    the first walk until the last cell is worded. Batch scoring's pass runs the walk on each row as soon as
    its contributions are made (:meth:`compiled`, :func:`training.batch_pass.target_pass`); :meth:`resolve`
    then walks again the rows that reached a cell the table lacked."""

    def __init__(self, plan: ReasonPlan, frame: pd.DataFrame, k: int, window: int | None, floats: np.ndarray | None,
                 factorize: Callable[[str], tuple[np.ndarray, Any]] | None, sentences: Sentences,
                 column: Callable[[str], pd.Series] | None = None) -> None:
        from leadscore.training.reason_walk import MISS_SLOTS

        n = len(frame)
        factorize = _factorizer(frame) if factorize is None else factorize
        self.plan, self.k, self.sentences = plan, k, sentences
        self.window = 4 * k if window is None else window
        (self.floats, self.kind, by_value, self.slot, self.member, self.units, self.only_for,
         self.silent) = _walk_arrays(plan, floats)
        self.sums, self.order = np.empty((n, len(plan.concepts))), np.empty((n, len(plan.concepts)), dtype=np.int64)
        self.pos, self.neg = np.empty((n, k), dtype=np.int64), np.empty((n, k), dtype=np.int64)
        self.misses = np.empty((n, MISS_SLOTS), dtype=np.int64)
        self.walked = False  # every row walked once (by the scoring pass: :meth:`compiled`)
        self._frame, self._by_value, self._factorize, self._column = frame, by_value, factorize, column

    @cached_property
    def vid(self) -> np.ndarray:
        """The by-value columns' values as ids (rows x those columns, -1 missing), made when first read: batch
        scoring opens the walk before its pass and reads them just before it, while the logs of the chunk
        are taken on another thread (:func:`training.batch_explain.explain_block`)."""
        vid = np.empty((len(self._frame), len(self._by_value)), dtype=np.int64)
        for s, j in enumerate(self._by_value.tolist()):
            name = self.plan.columns[j].name
            col = self._frame[name] if self._column is None else self._column(name)
            if isinstance(col.dtype, pd.CategoricalDtype):  # batch scoring's: ids per code of the run's dictionary
                vid[:, s] = self.sentences.category_ids(j, col.dtype)[col.array.codes]
            else:
                vid[:, s] = self.sentences.value_column(j, self._factorize(name))
        return vid

    @classmethod
    @contextmanager
    def open(cls, plan: ReasonPlan, frame: pd.DataFrame, k: int, window: int | None = None,
             floats: np.ndarray | None = None,
             factorize: Callable[[str], tuple[np.ndarray, Any]] | None = None,
             column: Callable[[str], pd.Series] | None = None) -> Iterator[BatchWalk]:
        """The walk of ``frame``'s rows (``floats``: which plan columns are read from the float block; None:
        the numeric ones), the plan's table locked meanwhile (:class:`Sentences` is one batch at a time).
        ``column``: ``frame[name]`` as the caller keeps it for the batch
        (:meth:`training.linear.FrameColumns.column`)."""
        sentences = _sentences(plan)
        with sentences.lock:
            if sentences.size > _MEMO_SIZE:
                sentences.reset()
            yield cls(plan, frame, k, window, floats, factorize, sentences, column)

    def compiled(self, block: np.ndarray) -> tuple[Any, ...]:
        """What :func:`training.reason_walk.row_walk` reads beside the row, the contributions and ``block``
        (rows x columns, float64, C order), in :func:`training.batch_pass.target_pass`'s order; the pass
        that is given them walks every row."""
        self.walked = True
        return (self.sums, self.order, block.view(np.int64), self.vid, self.slot, self.kind, self.units,
                self.only_for, self.silent, self.plan.concept_of, self.member, self.sentences.table, self.pos,
                self.neg, self.misses, self.k, self.window)

    def finish(self, contrib: np.ndarray, block: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str], Any]:
        """Every row's reasons (:meth:`result`): the rows walked (unless the pass walked them), those that
        missed a cell resolved."""
        if not self.walked:
            self.walk(np.arange(len(self.pos), dtype=np.int64), contrib, False, block)
        self.resolve(contrib, block)
        return self.result()

    def walk(self, rows: np.ndarray, contrib: np.ndarray, given: bool, block: np.ndarray) -> None:
        """The compiled walk of ``rows``, in parallel (``given``: their sums and orders are held already, from
        their first walk)."""
        from leadscore.features.kernel import parallel_chunks
        from leadscore.training.attribution import _PARALLEL
        from leadscore.training.reason_walk import walk

        with _PARALLEL, parallel_chunks(1):
            walk(rows, contrib, given, self.sums, self.order, block, block.view(np.int64), self.vid, self.slot,
                 self.kind, self.units, self.only_for, self.silent, self.plan.concept_of, self.member, self.k,
                 self.window, self.sentences.table, self.pos, self.neg, self.misses)

    def resolve(self, contrib: np.ndarray, block: np.ndarray) -> None:
        """Word the cells the walked rows reached and the table lacked (those recorded up to their
        ``window``-th concept, default ``4k``; each distinct key once), add them, walk those rows again (their
        sums and orders kept from the first walk); until no row misses one."""
        from leadscore.training.reason_walk import cell_keys

        rows = np.flatnonzero(self.misses[:, 0] >= 0)
        bits = block.view(np.int64)
        while len(rows):
            at, q = np.nonzero(self.misses[rows] >= 0)
            cell_rows, cell_cols = rows[at], self.misses[rows[at], q]
            k1, k2 = cell_keys(cell_rows, cell_cols, block, bits, self.vid, self.slot, self.kind, self.units)
            first: dict[tuple[int, int], int] = {}
            for p, key in enumerate(zip(k1.tolist(), k2.tolist(), strict=True)):
                first.setdefault(key, p)
            picks = np.fromiter(first.values(), dtype=np.int64, count=len(first))
            texts = [self.plan.text(j, float(block[r, j]) if self.floats[j] else self._shown(r, j))
                     for r, j in zip(cell_rows[picks].tolist(), cell_cols[picks].tolist(), strict=True)]
            self.sentences.add(k1[picks], k2[picks], texts)
            self.walk(rows, contrib, True, block)
            rows = rows[self.misses[rows, 0] >= 0]

    def result(self) -> tuple[np.ndarray, np.ndarray, list[str], Any]:
        """:func:`batch_reasons`' answer: positive and negative ids, the sentences, their quoted pieces."""
        return self.pos, self.neg, self.sentences.texts[:], self.sentences.pieces()

    def _shown(self, r: int, j: int) -> Any:
        """Row ``r``'s value of column ``j`` read by value (None: missing)."""
        t = int(self.vid[r, self.slot[j]])
        return None if t < 0 else self.sentences.values[j][t]


@cache
def idle_walk_args() -> tuple[Any, ...]:
    """:meth:`BatchWalk.compiled`'s shapes and types, empty: what the pass is given when it walks no reasons
    (one compiled signature either way)."""
    i1, i2, f2, b1 = (np.empty(0, dtype=np.int64), np.empty((0, 0), dtype=np.int64), np.empty((0, 0)),
                      np.empty(0, dtype=np.bool_))
    return (f2, i2, i2, i2, i1, i1, i1, b1, b1, i1, i2, np.empty((0, 3), dtype=np.int64), i2, i2, i2, 0, 0)


def _walk_arrays(plan: ReasonPlan, floats: np.ndarray | None) -> tuple[np.ndarray, ...]:
    """The plan's columns as :func:`training.reason_walk.walk` reads them: ``floats`` (which are read from the
    float block; None: the numeric ones, and the arrays are kept in the plan's memo), how each is read and
    its slot among those read by value, the concepts' members, units, ``only_for`` and ``silent_zero``."""
    from leadscore.training.reason_keys import unit_codes
    from leadscore.training.reason_walk import FLOAT, VALUE

    if floats is None:
        got = plan.memo.get("walk_arrays")
        if got is None:
            got = plan.memo.setdefault("walk_arrays", _walk_arrays(
                plan, np.array([c.numeric for c in plan.columns], dtype=bool)))
        return got  # type: ignore[no-any-return]
    kind = np.where(floats, FLOAT, VALUE).astype(np.int64)
    by_value = np.flatnonzero(~floats)
    slot = np.zeros(len(plan.columns), dtype=np.int64)
    slot[by_value] = np.arange(len(by_value))
    width = max((len(m) for m in plan.members), default=0)
    member = np.full((len(plan.members), max(width, 1)), -1, dtype=np.int64)
    for c, m in enumerate(plan.members):
        member[c, : len(m)] = m
    units = unit_codes([c.unit for c in plan.columns])
    only_for = np.array([c.only_for for c in plan.columns], dtype=np.bool_)
    silent = np.array([c.silent_zero for c in plan.columns], dtype=np.bool_) & floats
    return floats, kind, by_value, slot, member, units, only_for, silent


def _compact(pos: np.ndarray, neg: np.ndarray, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The ids renumbered over the sentences shown (the plan's table holds many more)."""
    shown = np.zeros(len(texts) + 1, dtype=bool)
    shown[pos] = True
    shown[neg] = True
    used = np.flatnonzero(shown[:-1])
    new = np.full(len(texts) + 1, -1, dtype=np.int64)
    new[used] = np.arange(len(used))
    return new[pos], new[neg], [texts[t] for t in used.tolist()]


def json_lists(ids: np.ndarray, texts: Sequence[str]) -> Any:
    """Each row of ``ids`` (rows x k sentence ids, -1 padding) as the JSON text of its list of sentences,
    ``json.dumps(list)`` exactly, as a text column (:func:`training.score_columns.json_list_column`)."""
    from leadscore.training.score_columns import inferred_text_dtype, json_list_column

    return json_list_column(ids, texts, inferred_text_dtype())
