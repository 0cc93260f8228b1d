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
(:mod:`training.reason_batch`): the same sums, each distinct shown value worded once, the same walk compiled.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
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
    #: batch wording's sentences (:class:`training.reason_batch.Sentences`), kept across the chunks of a
    #: run: a CRM's chunks show mostly the same values (bounded there)
    memo: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

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
    (the rule :func:`training.reason_walk.walk` compiles for batches: change both together)."""
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
