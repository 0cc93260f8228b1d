"""The column plan: how each schema column is read off the kernel output, and the rule score.

:func:`plan` resolves, once per settings object, where every feature of the schema comes from (a fit
column or a kernel slot of the registry, :mod:`features.registry`); :func:`rule_scores` adds the configured attribute
points to the kernel's activity points. Split from :mod:`features.engine`, which re-exports them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from leadscore.features.arrays import FeatureInputError
from leadscore.features.families.rule import SLOT as RULE_SLOT
from leadscore.features.registry import registry
from leadscore.features.schema import FIT_CATEGORICAL, FIT_NUMERIC, FeatureSpec

if TYPE_CHECKING:
    from leadscore.config import Settings


def interest_columns(settings: Settings) -> dict[str, int]:
    """Schema name → row of the kernel output, for every column a kernel family writes."""
    reg = registry(settings)
    return {name: reg.slot[name] for r in reg.families for name in (c.name for c in r.columns) if name in reg.slot}


@dataclass(frozen=True)
class Plan:
    """How each schema column is produced, resolved once per settings object."""

    schema: list[FeatureSpec]
    #: ("cat", i) fit categorical | ("num", i) fit numeric | ("k", row) kernel float | ("code", row) kernel category
    sources: list[tuple[str, int]]
    categories: dict[str, tuple[str, ...]]  # for "code" columns: category of each code (-1: missing)
    rule_row: int  # kernel row of the rule's activity points, -1 when the rule family is switched off
    rules: tuple[tuple[str, frozenset[str] | None, float, float, float], ...]

    def rule_points(self, out: np.ndarray) -> np.ndarray:
        """The rule's activity points of each moment from the kernel output (zeros without the family)."""
        return out[self.rule_row] if self.rule_row >= 0 else np.zeros(out.shape[1], dtype=np.float64)


def plan(settings: Settings) -> Plan:
    """How each schema column is produced for ``settings``, resolved once and kept with that object."""
    return settings.derived("features.plan", _build_plan)


def _build_plan(settings: Settings) -> Plan:
    reg = registry(settings)
    schema = reg.schema
    categories: dict[str, tuple[str, ...]] = {}
    for fam in reg.families:
        categories.update(fam.family.categories(settings))
    sources: list[tuple[str, int]] = []
    for spec in schema:
        if spec.name in reg.slot:
            sources.append(("code" if spec.dtype == "str" else "k", reg.slot[spec.name]))
        elif spec.name in FIT_CATEGORICAL:
            sources.append(("cat", FIT_CATEGORICAL.index(spec.name)))
        elif spec.name in FIT_NUMERIC:
            sources.append(("num", FIT_NUMERIC.index(spec.name)))
        else:
            raise FeatureInputError(f"feature {spec.name!r} is declared but no family computes it")
    by_name = {s.name: s for s in schema}
    rules = []
    for r in settings.rules.attribute_points:
        if r.field not in by_name:
            raise FeatureInputError(
                f"rules.attribute_points: field {r.field!r} is not a feature (known: {sorted(by_name)})")
        values = frozenset(str(v) for v in r.values) if r.values is not None else None
        lo = float(r.min) if r.min is not None else -np.inf
        hi = float(r.max) if r.max is not None else np.inf
        rules.append((r.field, values, lo, hi, float(r.points)))
    return Plan(schema, sources, categories, reg.slot.get(RULE_SLOT, -1), tuple(rules))


def rule_scores(p: Plan, rule_act: np.ndarray, column: Any) -> np.ndarray:
    """Activity points (from the kernel) plus attribute points, in config order.

    ``column(name)`` returns a feature's values for the moments: a pandas ``str`` Series or an object
    array for categories, float64 otherwise. Membership is exact string equality (NaN is never a
    member) on either; the float additions are the same numpy operations for one moment or a million,
    hence the same bits.
    """
    score = rule_act.astype(np.float64, copy=True)
    for field, values, lo, hi, pts in p.rules:
        v = column(field)
        if values is not None and isinstance(v, pd.Series):
            mask = v.isin(sorted(values)).to_numpy(dtype=bool)
        elif values is not None and v.dtype == object:
            mask = np.fromiter((isinstance(x, str) and x in values for x in v), dtype=bool, count=len(v))
        elif values is not None:
            mask = np.fromiter((f"{x:g}" in values for x in v), dtype=bool, count=len(v))
        else:
            vf = np.asarray(v, dtype=np.float64)
            with np.errstate(invalid="ignore"):
                mask = (vf >= lo) & (vf <= hi)
        score = score + np.where(mask, pts, 0.0)
    return score


def rule_score_one(p: Plan, rule_act: float, value: Any) -> float:
    """:func:`rule_scores` of one moment with Python scalars (``value(name)``: the feature's value).

    The same float additions in the same order as the array version (IEEE addition does not depend
    on numpy), so the same bits, without a one-element array per rule. A value the array version
    would convert (a category column in a range rule) goes through it.
    """
    score = float(rule_act)
    for field, values, lo, hi, pts in p.rules:
        v = value(field)
        if values is not None:
            hit = v in values if isinstance(v, str) else isinstance(v, float) and f"{v:g}" in values
        elif isinstance(v, float):
            hit = lo <= v <= hi  # NaN is in no range
        else:
            def column(name: str) -> np.ndarray:
                x = value(name)
                return np.array([x], dtype=np.float64) if isinstance(x, float) else np.array([x], dtype=object)

            return float(rule_scores(p, np.array([rule_act], dtype=np.float64), column)[0])
        score = score + (pts if hit else 0.0)
    return score
