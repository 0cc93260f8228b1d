"""The column plan: how each schema column is read off the kernel output, and the rule score.

:func:`plan` resolves, once per settings object, where every feature of the schema comes from (a fit
column, the kernel's layout, the current stage); :func:`rule_scores` adds the configured attribute
points to the kernel's activity points. Split from :mod:`features.engine`, which re-exports them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from leadscore.features.arrays import FeatureInputError
from leadscore.features.kernel import layout
from leadscore.features.schema import (
    FIT_CATEGORICAL,
    FIT_NUMERIC,
    FeatureSpec,
    count_name,
    decay_name,
    feature_schema,
)

if TYPE_CHECKING:
    from leadscore.config import Settings


def interest_columns(settings: Settings) -> dict[str, int]:
    """Schema name → column of the kernel output, for every float64 interest feature."""
    fc = settings.features
    names = settings.activity_names
    nw, nh = len(fc.windows_days), len(fc.half_lives_days)
    o = layout(len(names), nw, nh)
    m: dict[str, int] = {}

    def at(block: str, i: int = 0) -> int:
        base = o[block]
        assert isinstance(base, int)
        return base + i

    for k, a in enumerate(names):
        for w, days in enumerate(fc.windows_days):
            m[count_name(a, days)] = at("cnt", k * nw + w)
        for h, hl in enumerate(fc.half_lives_days):
            m[decay_name(a, hl)] = at("dec", k * nh + h)
    for w, days in enumerate(fc.windows_days):
        suffix = count_name("x", days)[len("n_x_"):]
        m[f"n_total_{suffix}"] = at("tot_cnt", w)
        m[f"n_high_intent_{suffix}"] = at("hi_cnt", w)
        m[f"active_days_{suffix}"] = at("active", w)
    for h, hl in enumerate(fc.half_lives_days):
        m[f"decay_total_{decay_name('x', hl)[len('decay_x_'):]}"] = at("tot_dec", h)
    m["n_activities_total"] = at("n_all")
    for k, a in enumerate(names):
        m[f"n_{a}_total"] = at("tot_k", k)
    m["days_since_last_activity"] = at("days_last")
    m["days_since_last_high_intent"] = at("days_last_hi")
    m["days_since_first_activity"] = at("days_first")
    m[f"velocity_{fc.velocity_recent_days}_{fc.velocity_base_days}"] = at("velocity")
    m["times_recycled"] = at("recycled")
    m["days_in_stage"] = at("days_in_stage")
    m["days_since_created"] = at("days_created")
    m["account_n_leads"] = at("acc_n_leads")
    m["account_has_open_opportunity"] = at("acc_open")
    m["account_had_opportunity"] = at("acc_had")
    m["account_other_leads_activities_30d"] = at("acc_other_30")
    m["account_other_leads_high_intent_30d"] = at("acc_other_hi_30")
    return m


@dataclass(frozen=True)
class Plan:
    """How each schema column is produced, resolved once per settings object."""

    schema: list[FeatureSpec]
    sources: list[tuple[str, int]]  # ("cat", i) fit categorical | ("num", i) fit numeric | ("k", col) kernel
    stage_col: int
    rule_col: int
    stages: tuple[str, ...]
    rules: tuple[tuple[str, frozenset[str] | None, float, float, float], ...]


def plan(settings: Settings) -> Plan:
    """How each schema column is produced for ``settings``, resolved once and kept with that object."""
    return settings.derived("features.plan", _build_plan)


def _build_plan(settings: Settings) -> Plan:
    schema = feature_schema(settings)
    kcols = interest_columns(settings)
    lay = layout(len(settings.activity_names), len(settings.features.windows_days),
                 len(settings.features.half_lives_days))
    sources: list[tuple[str, int]] = []
    for spec in schema:
        if spec.name in FIT_CATEGORICAL:
            sources.append(("cat", FIT_CATEGORICAL.index(spec.name)))
        elif spec.name in FIT_NUMERIC:
            sources.append(("num", FIT_NUMERIC.index(spec.name)))
        elif spec.name == "current_stage":
            sources.append(("stage", 0))
        else:
            sources.append(("k", kcols[spec.name]))
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
    return Plan(schema, sources, int(lay["stage_code"]), int(lay["rule_act"]),  # type: ignore[arg-type]
                tuple(settings.stages.all), tuple(rules))


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
