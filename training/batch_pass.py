"""A bundle's targets over a chunk in one compiled pass (numba): trees, logistic terms and their blend.

Batch scoring (:func:`training.batch_explain.explain_block`) needs per target the trees' raw margin and
the logistic model's term sum, and for the explained target the per-feature contributions blended in
log-odds. Done as separate passes that is ``Booster.predict`` per target (a predictor built per call),
a path walk, then a logistic pass per model that re-reads the contributions. Here each row is finished in
one visit for every target, rows in parallel over the cores (``prange``, as LightGBM's own prediction
uses them), from a :class:`PassPlan` (the targets' arrays packed once per bundle):

* the trees: :func:`training.attribution._one`, the path walk of the one-row path (LightGBM's routing, the
  leaf values added in tree order: ``predict(raw_score=True)`` to the bit), adding each split's delta to
  the row's contributions, or to scratch for a target that is not explained;
* the logistic terms and the blend: :func:`training.linear_terms.linear_block`, down the block's rows
  of the column-major chunk;
* then, the explained contributions finished and still in cache, each row's band group sums (as the
  service sums one row, :func:`_group_sums`) and its reasons walk (:func:`training.reason_walk.row_walk`).

The chunk is column-major (:func:`training.encoding.encode_columns`); each block of rows is copied
row-major into scratch first. The arithmetic per row is that of those functions, so the results do not
depend on how rows are split among threads. Imported when first used: numba compiles on first call
(cached on disk).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numba import njit, prange, uint64

from leadscore.features.kernel import parallel_chunks
from leadscore.training.attribution import _one
from leadscore.training.linear_terms import BLEND, LINEAR, NO_CONTRIB, linear_block, term_constants
from leadscore.training.reason_walk import row_walk

if TYPE_CHECKING:
    from leadscore.training.attribution import PathModel
    from leadscore.training.bundle import TargetModel

#: rows per block of :func:`target_pass`: its rows are copied row-major into scratch that stays in cache
#: (32 x ~140 doubles), and each logistic term runs down them as one vector loop. Measured on the 3,867-row
#: benchmark chunk, one thread: 16 rows 29-30 ms per pass, 32 rows 22-24 (the terms' per-block set-up
#: halved), 48-64 no better
_BLOCK = 32


@dataclass(frozen=True)
class PassPlan:
    """A bundle's targets packed for :func:`target_pass`, built once per bundle and explained target
    (:func:`pass_plan`): the walked trees of every target concatenated (node, leaf and bitset indices
    offset; ``feature`` the row of the chunk each split reads), the logistic terms concatenated, and per
    target its ranges into them. Per target ``t``: ``walk[t]`` whether its trees are walked here,
    ``linear[t]`` whether it has logistic terms, ``mode[t]`` how they write the contributions."""

    targets: tuple[str, ...]
    explain: bool  # the first target's contributions are wanted
    walk: np.ndarray
    trees: tuple[np.ndarray, ...]  # PathModel._arrays() of the walked trees, concatenated
    tree_range: np.ndarray  # targets x 2: its trees' range in ``roots``
    linear: np.ndarray
    val_col: np.ndarray  # per numeric term: its schema column (and row of the chunk)
    constants: tuple[np.ndarray, ...]  # per numeric term: missing, present, center, scale, coef
    num_range: np.ndarray  # targets x 2
    term_col: np.ndarray  # per term, numeric then categorical per target: its schema column
    term_range: np.ndarray  # targets x 2
    cat_range: np.ndarray  # targets x 2: its category terms' rows in the per-chunk ``cat_terms``
    means: np.ndarray  # targets x schema columns: the terms' fit-row means
    mode: np.ndarray
    weights: np.ndarray  # targets x 2: the trees' and the linear contributions' blend weights


def pass_plan(targets: Sequence[str], models: Mapping[str, TargetModel], paths: Mapping[str, PathModel],
              reads: Mapping[str, np.ndarray], columns: Mapping[str, int], explain: bool) -> PassPlan:
    """Pack ``targets`` (the explained one first when ``explain``): ``paths`` the compiled trees of those
    walked here, ``reads`` per target the row of the chunk it reads for each schema column
    (:func:`training.encoding.encode_columns`), ``columns`` each feature's schema column."""
    from leadscore.training.linear import signed_log

    k = len(targets)
    trees: list[list[np.ndarray]] = [[] for _ in range(12)]
    tree_range, num_range, term_range, cat_range = (np.zeros((k, 2), dtype=np.int64) for _ in range(4))
    walk, linear = np.zeros(k, dtype=np.bool_), np.zeros(k, dtype=np.bool_)
    mode, weights, means = np.full(k, NO_CONTRIB, dtype=np.int64), np.ones((k, 2)), np.zeros((k, len(columns)))
    val_col: list[np.ndarray] = []
    term_col: list[np.ndarray] = []
    constants: list[list[np.ndarray]] = [[] for _ in range(5)]
    nodes = leaves = cats = bits = n_trees = n_terms = n_nums = n_cats = 0
    for t, name in enumerate(targets):
        m, p = models[name], paths.get(name)
        if p is not None:
            walk[t] = True
            a = p._arrays()
            feature, threshold, decision = a[0], a[1], a[2]
            for q, arr in enumerate((reads[name][feature], np.where((decision & 1) != 0, threshold + cats, threshold),
                                     decision, _offset(a[3], nodes, leaves), _offset(a[4], nodes, leaves), a[5], a[6],
                                     a[7] + bits, a[8], a[9], a[10], _offset(a[11], nodes, leaves))):
                trees[q].append(arr)
            tree_range[t] = n_trees, n_trees + len(a[11])
            nodes, leaves, cats = nodes + len(feature), leaves + len(a[10]), cats + len(a[7])
            bits, n_trees = bits + len(a[9]), n_trees + len(a[11])
        lin = m.linear if m.kind != "lightgbm" else None
        if lin is None:
            continue
        linear[t] = True
        fill, center, scale, coef, miss_coef = lin._numeric_arrays
        missing, present = term_constants(signed_log(fill), center, scale, coef, miss_coef)
        for q, arr in enumerate((missing, present, center, scale, coef)):
            constants[q].append(arr)
        val_col.append(np.array([columns[x.name] for x in lin.numeric], dtype=np.int64))
        term_col.append(np.array([columns[f] for f in lin.features], dtype=np.int64))
        num_range[t] = n_nums, n_nums + len(lin.numeric)
        term_range[t] = n_terms, n_terms + len(lin.features)
        cat_range[t] = n_cats, n_cats + len(lin.categorical)
        n_nums, n_terms, n_cats = n_nums + len(lin.numeric), n_terms + len(lin.features), n_cats + len(lin.categorical)
        for f, v in lin.term_means.items():
            if f in columns:
                means[t, columns[f]] = v
        if explain and t == 0:
            mode[t] = BLEND if m.uses_trees else LINEAR
            w = float(m.blend_weight) if mode[t] == BLEND else 1.0  # type: ignore[arg-type]
            weights[t] = w, 1.0 - w
    dtypes = (np.int32, np.float64, np.uint8, np.int32, np.int32, np.float64, np.float64, np.int32, np.int32,
              np.uint32, np.float64, np.int32)
    return PassPlan(tuple(targets), explain, walk, tuple(_cat(q, d) for q, d in zip(trees, dtypes, strict=True)),
                    tree_range, linear, _cat(val_col, np.int64), tuple(_cat(c, np.float64) for c in constants),
                    num_range, _cat(term_col, np.int64), term_range, cat_range, means, mode, weights)


def _offset(child: np.ndarray, nodes: int, leaves: int) -> np.ndarray:
    """Node indices moved by ``nodes``, leaves (``~leaf``) by ``leaves``: a model appended to others."""
    return np.where(child >= 0, child + nodes, ~(~child + leaves))


def _cat(parts: Sequence[np.ndarray], dtype: type) -> np.ndarray:
    return np.ascontiguousarray(np.concatenate(parts) if parts else np.empty(0), dtype=dtype)


def run_pass(plan: PassPlan, values: np.ndarray, abs_logs: np.ndarray, cat_terms: np.ndarray,
             contrib: np.ndarray, row_major: np.ndarray | None = None, groups: np.ndarray | None = None,
             walk_args: tuple[Any, ...] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`target_pass` of ``plan`` over the chunk: per target (plan order) the margins and the logistic
    sums (targets x rows each), and per row the explained contributions' sum over each of ``groups``
    (rows x groups; :func:`_group_sums`). ``row_major`` (rows x ``values``' rows, C order): filled with the chunk
    row-major, the copy the pass makes block by block anyway (the reasons read a row's values together).
    ``walk_args``: the reasons walk run on each row as its contributions are made
    (:meth:`training.reason_batch.BatchWalk.compiled` of ``row_major``)."""
    from leadscore.training.attribution import _PARALLEL

    rows = values.shape[1]
    margin, sums = np.empty((len(plan.targets), rows)), np.empty((len(plan.targets), rows))
    if row_major is None:
        row_major = np.empty((0, values.shape[0]))
    groups = np.empty((0, 0), dtype=np.int64) if groups is None else groups
    group_sums = np.empty((rows, len(groups)))
    reasons = walk_args is not None
    if reasons and row_major.shape[0] != rows:
        raise ValueError("the reasons walk reads the chunk's rows from row_major: pass it")
    if walk_args is None:
        from leadscore.training.reason_batch import idle_walk_args

        walk_args = idle_walk_args()
    with _PARALLEL, parallel_chunks(1):  # blocks of rows to the threads one at a time
        target_pass(values, abs_logs, plan.explain, plan.walk, *plan.trees, plan.tree_range,  # type: ignore[call-arg,arg-type]
                    plan.linear, plan.val_col, *plan.constants, plan.num_range, plan.term_col, plan.term_range,
                    cat_terms, plan.cat_range, plan.means, plan.mode, plan.weights, contrib, margin, sums, row_major,
                    groups, group_sums, reasons, *walk_args)
    return margin, sums, group_sums


@njit(cache=True, parallel=True, nogil=True)
def target_pass(values: np.ndarray, abs_logs: np.ndarray, explain: bool, walk: np.ndarray, feature: np.ndarray,
                threshold: np.ndarray, decision: np.ndarray, left: np.ndarray, right: np.ndarray, dl: np.ndarray,
                dr: np.ndarray, cat_start: np.ndarray, cat_words: np.ndarray, cat_bits: np.ndarray,
                leaf_value: np.ndarray, roots: np.ndarray, tree_range: np.ndarray, linear: np.ndarray,
                val_col: np.ndarray, missing: np.ndarray, present: np.ndarray, center: np.ndarray, scale: np.ndarray,
                coef: np.ndarray, num_range: np.ndarray, term_col: np.ndarray, term_range: np.ndarray,
                cat_terms: np.ndarray, cat_range: np.ndarray, means: np.ndarray, mode: np.ndarray,
                weights: np.ndarray, contrib: np.ndarray, margin: np.ndarray, sums: np.ndarray,
                row_major: np.ndarray, groups: np.ndarray, group_sums: np.ndarray, reasons: bool, w_sums: np.ndarray,
                w_order: np.ndarray, bits: np.ndarray, vid: np.ndarray, slot: np.ndarray, kind: np.ndarray,
                unit: np.ndarray, only_for: np.ndarray, silent: np.ndarray, concept_of: np.ndarray,
                member: np.ndarray, table: np.ndarray, pos: np.ndarray, neg: np.ndarray, misses: np.ndarray, k: int,
                window: int) -> None:
    """Each row ``r`` of ``values`` (columns x rows) for every target ``t`` of a :class:`PassPlan` (its arrays
    spread out): with ``walk[t]`` the trees' margin into ``margin[t, r]`` and, for the first target when
    ``explain``, their contributions into ``contrib[r]`` (overwritten); with ``linear[t]`` the logistic
    terms' sum into ``sums[t, r]`` (``abs_logs``: ``log1p(|x|)`` of the schema rows of ``values``;
    ``cat_terms``: category terms x rows) and the contributions written as ``mode[t]`` says
    (:func:`training.linear_terms.linear_block`).

    Column-major rows read one value per cache line; a walk would wait on memory, so each block of rows is
    first copied row-major into scratch (the same values, the same bits), once for all targets; into
    ``row_major`` when it has the chunk's rows (else it is 0 x columns). The
    logistic terms read the column-major chunk itself: a term down the block's rows is one vector loop.

    Then, while the block's contributions are in cache, each row is finished: per group ``g`` of
    ``groups`` (groups x columns, -1 padded) the sum of its columns' contributions into
    ``group_sums[r, g]`` (:func:`_group_sums`); with ``reasons`` its reasons walk
    (:func:`training.reason_walk.row_walk`, ``walk_args``: :meth:`training.reason_batch.BatchWalk.compiled`,
    reading the row-major chunk)."""
    n = values.shape[1]
    m = values.shape[0]
    width = means.shape[1]
    leaves = np.empty(0, dtype=np.int32)
    finish = explain and (groups.shape[0] > 0 or reasons)
    rows = np.arange(n if finish else 0)  # the walk's row numbers (training.reason_walk.row_walk)
    for b in prange((n + _BLOCK - 1) // _BLOCK):
        lo = b * _BLOCK
        hi = min(n, lo + _BLOCK)
        x = row_major[lo:hi] if row_major.shape[0] else np.empty((hi - lo, m))
        for j in range(m):
            for r in range(lo, hi):
                x[r - lo, j] = values[j, r]
        scratch = np.zeros(max(m, width))
        lin = np.empty((_BLOCK, width))
        terms = np.empty(_BLOCK)
        for t in range(len(walk)):  # the trees first: their nodes stay in cache while the block is walked
            if not walk[t]:
                continue
            own = explain and t == 0
            tree_roots = roots[tree_range[t, 0]:tree_range[t, 1]]
            for r in range(lo, hi):
                row = contrib[r] if own else scratch
                if own:
                    row[:] = 0.0
                margin[t, r] = _one(x[r - lo], row, leaves, feature, threshold, decision, left, right, dl, dr,
                                    cat_start, cat_words, cat_bits, leaf_value, tree_roots)
        for t in range(len(walk)):
            if not linear[t]:
                continue
            a, z = num_range[t, 0], num_range[t, 1]
            linear_block(values, abs_logs, lo, hi, val_col[a:z], missing[a:z], present[a:z], center[a:z],
                         scale[a:z], coef[a:z], cat_terms[cat_range[t, 0]:cat_range[t, 1]],
                         term_col[term_range[t, 0]:term_range[t, 1]], means[t], mode[t], weights[t, 0],
                         weights[t, 1], contrib, sums[t, lo:hi], lin, terms)
        if finish:
            _finish(rows, lo, hi, contrib, row_major, groups, group_sums, reasons, w_sums, w_order, bits, vid, slot,
                    kind, unit, only_for, silent, concept_of, member, table, pos, neg, misses, k, window)


@njit(cache=True)
def _finish(rows: np.ndarray, lo: int, hi: int, contrib: np.ndarray, row_major: np.ndarray, groups: np.ndarray,
            group_sums: np.ndarray, reasons: bool, w_sums: np.ndarray, w_order: np.ndarray, bits: np.ndarray, vid: np.ndarray,
            slot: np.ndarray, kind: np.ndarray, unit: np.ndarray, only_for: np.ndarray, silent: np.ndarray,
            concept_of: np.ndarray, member: np.ndarray, table: np.ndarray, pos: np.ndarray, neg: np.ndarray,
            misses: np.ndarray, k: int, window: int) -> None:
    """:func:`target_pass`' last step on rows ``lo..hi`` (``rows``: ``arange`` of the chunk's rows), once their
    contributions are made: the group sums and the reasons walk (see there)."""
    _group_sums(contrib, lo, hi, groups, group_sums)
    if reasons:
        row_walk(rows, lo, hi, contrib, False, w_sums, w_order, row_major, bits, vid, slot, kind, unit, only_for,
                 silent, concept_of, member, k, window, table, pos, neg, misses)


@njit(cache=True)
def _group_sums(contrib: np.ndarray, lo: int, hi: int, groups: np.ndarray, out: np.ndarray) -> None:
    """Per row ``r`` of ``lo..hi`` and group ``g``: the sum of ``contrib[r]`` at the columns ``groups[g]`` (-1
    ends them) as numpy sums that selection of one row (``row[columns].sum()``, what the one-row path's
    :func:`training.bands.group_sums` computes) into ``out[r, g]``: the values gathered, then numpy's
    pairwise summation (:func:`_pairwise`). The batch's band is then the service's to the bit. A block of
    rows per call, the gather written out here: a compiled call's arrays are reference counted, in and out
    (a call per row and group cost ~10x its sum)."""
    gather = np.empty(groups.shape[1])
    for r in range(lo, hi):
        for g in range(groups.shape[0]):
            m = 0
            for q in range(groups.shape[1]):
                if groups[g, q] < 0:
                    break
                gather[m] = contrib[r, uint64(groups[g, q])]  # unsigned: no test for a negative index
                m += 1
            out[r, g] = 0.0 + _pairwise(gather, 0, m)


@njit(cache=True)
def _pairwise(a: np.ndarray, lo: int, n: int) -> float:
    """numpy's ``pairwise_sum`` of ``a[lo:lo + n]`` (``numpy/_core/src/umath/loops_utils.h.src``): up to 128
    values :func:`_pairwise_block`; beyond, the two halves (the first a multiple of 8) summed so and added.
    Its recursion is unrolled on a stack here (numba's cache does not keep recursive functions)."""
    if n <= 128:
        return _pairwise_block(a, lo, n)
    span_lo, span_n = np.empty(128, dtype=np.int64), np.empty(128, dtype=np.int64)
    combine = np.empty(128, dtype=np.bool_)
    done = np.empty(128)
    top = 1
    span_lo[0], span_n[0], combine[0] = lo, n, False
    sums = 0
    while top:
        top -= 1
        s_lo, s_n = span_lo[top], span_n[top]
        if combine[top]:  # both halves summed: the left one below the right one
            done[sums - 2] = done[sums - 2] + done[sums - 1]
            sums -= 1
        elif s_n <= 128:
            done[sums] = _pairwise_block(a, s_lo, s_n)
            sums += 1
        else:  # the halves, the left one popped first, then their sum
            half = s_n // 2
            half -= half % 8
            span_lo[top], span_n[top], combine[top] = s_lo, s_n, True
            span_lo[top + 1], span_n[top + 1], combine[top + 1] = s_lo + half, s_n - half, False
            span_lo[top + 2], span_n[top + 2], combine[top + 2] = s_lo, half, False
            top += 3
    return done[0]  # type: ignore[no-any-return]


@njit(cache=True)
def _pairwise_block(a: np.ndarray, lo: int, n: int) -> float:
    """numpy's pairwise sum of at most 128 values: under 8 in order; else 8 interleaved partial sums combined
    as a tree, the rest added in order."""
    if n < 8:
        res = 0.0
        for i in range(lo, lo + n):
            res += a[i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    while i < n - n % 8:
        r0 += a[lo + i]
        r1 += a[lo + i + 1]
        r2 += a[lo + i + 2]
        r3 += a[lo + i + 3]
        r4 += a[lo + i + 4]
        r5 += a[lo + i + 5]
        r6 += a[lo + i + 6]
        r7 += a[lo + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res
