"""Plain-words reasons for one score: contributions summed per concept, worded from the schema.

A model spreads one signal over many columns (the demo-request counts of four windows and three
decayed counts, say); a salesperson wants one sentence for it. The feature registry gives every
column a ``concept``; the exact per-feature contributions (LightGBM's TreeSHAP, the logistic model's
linear terms, or their blend) are summed per concept — SHAP values are additive, so the sum is the
concept's exact share of the log-odds — and the strongest concepts each way are worded by their
lowest-ranked column whose value says something: "2 demo requests in the last 7 days" rather than
"decay_demo_request_hl3: 0.87". A zero count, flag or weight says nothing and is never a reason; a
missing value is worded by its own sentence ("No buying signal yet"). Schemas without concepts (flat
tables, older bundles) group nothing: each column is its own concept.

A column may read as a buying signal (``only_for`` in the registry: recent pricing views, demo requests,
buying signals by colleagues). The high-intent columns overlap (a lead who asked for a demo also viewed
pricing), and an attribution splits their shared credit so that one of them can sum negative for the
lead with the most intent of all; "2 pricing page views in the last 24 hours" as a reason *against*
reads as nonsense to a salesperson. So a concept whose sum is negative and whose wording column reads as
a buying signal (its value present) is not worded, as a concept that says nothing is not: the sums
stay exact (the bands and the other reasons are unchanged), only that sentence is not shown.

The contributions of one row come from :mod:`training.row_path` (LightGBM's single-row TreeSHAP, the
logistic terms); :func:`top_reasons` only sums and words them. Batch scoring words a whole chunk at once
(:func:`batch_top_ids`): the same sums, each distinct value worded once, the same walk compiled.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from leadscore.features.schema import missing_text

#: units whose zero carries no information (no such activity, no flag, no weight)
_ZERO_SAYS_NOTHING = frozenset({"count", "weight", "flag", "number", "money", ""})
_PLURAL = re.compile(r"\[([^|\]]*)\|([^\]]*)\]")


def is_missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, (float, np.floating)) and math.isnan(value))


def format_value(value: Any) -> str:
    """A feature value as a reason shows it: integers without decimals, small floats with two."""
    if is_missing(value):
        return "none"
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if v.is_integer():
            return str(int(v))
        return f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"
    return str(value)


def _days(v: float) -> str:
    if v < 1:
        return "less than a day"
    return "1 day" if v < 2 else f"{int(v)} days"


def _money(v: float) -> str:
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if v >= div:
            return f"{v / div:.3g}{suffix}"
    return f"{v:,.0f}"


def _category(v: str) -> str:
    """``paid_search`` → "paid search"; short codes read as acronyms (``mql`` → "MQL", ``vp`` → "VP"),
    a one-letter prefix joins with a hyphen (``c_level`` → "C-level")."""
    text = v.replace("_", " ")
    if len(text) <= 3 and text.isalpha():
        return text.upper()
    if len(text) > 2 and text[1] == " " and text[0].isalpha():  # c_level → "C-level"
        return f"{text[0].upper()}-{text[2:]}"
    return text


def _shown(unit: str, v: float) -> str:
    if unit == "days":
        return _days(v)
    if unit == "money":
        return _money(v)
    if unit == "number":
        return f"{v:,.0f}" if v.is_integer() else f"{v:,.2f}"
    if unit == "ratio":
        return f"{v:.1f}"
    return format_value(v)


@dataclass(frozen=True)
class _Column:
    name: str
    unit: str
    one: str  # template for a value of exactly 1
    many: str  # template for any other value
    missing: str
    value_texts: Mapping[str, str]
    silent_zero: bool  # a zero of this unit says nothing (no such activity, no flag)
    numeric: bool  # not a ``str`` column: batch scoring reads its values from the encoded float block
    only_for: bool  # a present value reads as a buying signal: never worded as a reason against


@dataclass(frozen=True)
class ReasonPlan:
    """A schema's concepts: which columns each sums, in which order they word it. Built once per bundle."""

    columns: list[_Column]
    concept_of: np.ndarray  # concept index of each column
    concepts: list[str]
    members: list[list[int]]  # per concept: column indices, lowest rank first
    #: batch wording's sentences by (column, display key) (:func:`concept_text_ids`), kept across the chunks
    #: of a run: a CRM's chunks show mostly the same values; cleared when it holds :data:`_MEMO_SIZE`
    memo: dict[tuple[int, int], str | None] = field(default_factory=dict, compare=False, repr=False)

    def text(self, j: int, value: Any) -> str | None:
        """Column ``j``'s sentence for ``value``; None when the value says nothing (a zero count)."""
        c = self.columns[j]
        if value.__class__ is float:  # the usual value: a kernel float, worded without the general checks
            if value != value:
                return c.missing
            if value == 0.0 and c.silent_zero:
                return None
            return (c.one if value == 1.0 else c.many).format(value=_shown(c.unit, value))
        if is_missing(value):
            return c.missing
        if isinstance(value, str):
            return c.value_texts.get(value) or c.many.format(value=_category(value))
        v = float(value)
        if v == 0.0 and c.unit in _ZERO_SAYS_NOTHING:
            return None
        return (c.one if v == 1.0 else c.many).format(value=_shown(c.unit, v))

    def against(self, j: int, value: Any) -> bool:
        """Whether column ``j``'s sentence for ``value`` may be a reason *against* the lead: not when the
        column reads as a buying signal (``only_for``) and the value is present (module docstring)."""
        return not self.columns[j].only_for or is_missing(value)

    def concept_text(self, concept: int, row: Mapping[str, Any]) -> tuple[int, str] | None:
        for j in self.members[concept]:
            text = self.text(j, row[self.columns[j].name])
            if text is not None:
                return j, text
        return None


def reason_plan(schema: Sequence[Mapping[str, Any]]) -> ReasonPlan:
    """The concepts of ``schema`` (columns without one are their own), members ordered by rank."""
    columns: list[_Column] = []
    concept_ids: list[int] = []
    keys: dict[str, int] = {}
    ranks: list[int] = []
    for spec in schema:
        name = spec["name"]
        template = spec.get("template") or f"{name}: {{value}}"
        unit = spec.get("unit", "")
        columns.append(_Column(
            name=name, unit=unit, one=_PLURAL.sub(r"\1", template), many=_PLURAL.sub(r"\2", template),
            missing=spec.get("missing") or missing_text(name), value_texts=spec.get("value_texts") or {},
            silent_zero=unit in _ZERO_SAYS_NOTHING, numeric=spec.get("dtype") != "str",
            only_for=bool(spec.get("only_for", False))))
        concept = spec.get("concept") or name
        concept_ids.append(keys.setdefault(concept, len(keys)))
        ranks.append(int(spec.get("rank", 0)))
    members: list[list[int]] = [[] for _ in keys]
    for j in sorted(range(len(columns)), key=lambda j: (ranks[j], j)):
        members[concept_ids[j]].append(j)
    return ReasonPlan(columns, np.array(concept_ids, dtype=np.int64), list(keys), members)


def as_mapping(features_row: Any) -> Mapping[str, Any]:
    """One moment's features from a mapping, a Series or a one-row DataFrame."""
    if isinstance(features_row, pd.DataFrame):
        if len(features_row) != 1:
            raise ValueError(f"reasons() explains one row; got {len(features_row)}")
        return features_row.iloc[0].to_dict()
    if isinstance(features_row, pd.Series):
        return features_row.to_dict()
    if isinstance(features_row, Mapping):
        return features_row
    raise TypeError(f"expected a mapping, Series or one-row DataFrame, got {type(features_row).__name__}")


def concept_sums(plan: ReasonPlan, contrib: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For many rows at once (``contrib``: rows x columns): each concept's summed contribution, added in
    column order exactly as :func:`top_reasons`' ``np.bincount`` does for one row (the same bits), and each
    row's concepts by decreasing absolute sum (stable). Batch scoring's per-row numpy calls cost more than
    the walk of the trees."""
    c = np.atleast_2d(np.asarray(contrib, dtype=np.float64))
    if not np.isnan(c).any():  # compiled (training.reason_select): the same bits, no per-column numpy call
        from leadscore.training.reason_select import concept_order

        return concept_order(np.ascontiguousarray(c), plan.concept_of, len(plan.concepts))  # type: ignore[no-any-return]
    sums = np.zeros((len(c), len(plan.concepts)))
    for j, concept in enumerate(plan.concept_of.tolist()):
        sums[:, concept] += c[:, j]
    return sums, np.argsort(-np.abs(sums), axis=1, kind="stable")


def top_reasons(plan: ReasonPlan, row: Mapping[str, Any], contrib: np.ndarray, k: int) -> dict[str, list[dict[str, Any]]]:
    """The ``k`` strongest concepts for and against (``contrib``: per column, schema order, no bias).

    Each item is ``{concept, feature, value, contribution, text}``: ``contribution`` is the concept's
    summed log-odds, ``feature``/``value`` the column that words it. Concepts that word the same
    sentence ("No company known" for every account roll-up of a lead without account) count once,
    with their contributions summed.
    """
    sums = np.bincount(plan.concept_of, weights=contrib, minlength=len(plan.concepts))
    pos, neg = _select(plan, row, sums.tolist(), np.argsort(-np.abs(sums), kind="stable").tolist(), k)

    def shown(text: str, it: list[Any]) -> dict[str, Any]:
        name = plan.columns[it[1]].name
        return {"concept": plan.concepts[it[0]], "feature": name, "value": format_value(row[name]),
                "contribution": it[2], "text": text}

    return {"positive": [shown(t, i) for t, i in pos], "negative": [shown(t, i) for t, i in neg]}


def _select(plan: ReasonPlan, row: Mapping[str, Any], sums: list[float], order: list[int],
            k: int) -> tuple[list[tuple[str, list[Any]]], ...]:
    """The worded concepts for and against, strongest first: ``(text, [concept, column, summed contribution])``
    (the rule :func:`training.reason_select.select_top` compiles for batches: change both together)."""
    by_text: dict[str, list[Any]] = {}  # text -> [concept, column, summed contribution]
    for c in order:
        s = sums[c]
        if s == 0.0:
            break
        worded = plan.concept_text(c, row)
        if worded is None:
            continue
        j, text = worded
        if s < 0.0 and not plan.against(j, row[plan.columns[j].name]):
            continue  # a buying signal the model's credit assignment counts against: not a reason
        item = by_text.get(text)
        if item is None:
            by_text[text] = [c, j, s]
        else:
            item[2] += s
        n_pos = n_neg = 0  # counted again: a merge can change an item's side
        for it in by_text.values():
            n_pos += it[2] > 0
            n_neg += it[2] < 0
        if n_pos >= k and n_neg >= k:
            break
    items = list(by_text.items())
    pos = sorted((ti for ti in items if ti[1][2] > 0), key=lambda ti: -ti[1][2])[:k]
    neg = sorted((ti for ti in items if ti[1][2] < 0), key=lambda ti: ti[1][2])[:k]
    return pos, neg


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
    :func:`top_reasons` merges them. ``block``: the frame's schema columns as float64 (rows x columns, the
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
    """:func:`top_reasons`' sentences of every row of ``frame`` (``contrib``: rows x schema columns), as
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
