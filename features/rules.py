"""The rule-based points score (HubSpot/Mautic style) that the models are compared with.

Points per activity type (decayed by ``rules.half_life_days``, within ``rules.window_days``) are summed
in the feature kernel, in the same pass and from the same rows as the interest features; attribute
points (``rules.attribute_points``, on any feature) are added by :func:`features.engine.rule_scores`.
So the score is ``features.compute(...)["rule_score"]`` — there is no second implementation to drift.
This module holds what is specific to the rule: the MQL decision and a plain description.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, overload

import numpy as np

if TYPE_CHECKING:
    from leadscore.config import Settings


@overload
def rule_is_mql(score: float, settings: Settings) -> bool: ...
@overload
def rule_is_mql(score: np.ndarray, settings: Settings) -> np.ndarray: ...


def rule_is_mql(score: float | np.ndarray, settings: Settings) -> bool | np.ndarray:
    """Whether the rule would flag the lead as MQL: score at or above ``rules.mql_threshold``."""
    threshold = float(settings.rules.mql_threshold)
    if isinstance(score, np.ndarray):
        return np.asarray(score >= threshold)
    return bool(score >= threshold)


def describe_rules(settings: Settings) -> list[str]:
    """The rule in plain words, one line per clause (for reports and ``leadscore features list``)."""
    r = settings.rules
    lines = []
    decay = f", halving every {r.half_life_days:g} days" if r.half_life_days else ""
    window = f", counting the last {r.window_days} days" if r.window_days else ""
    for name, pts in r.activity_points.items():
        lines.append(f"{pts:+g} points per {settings.activity(name).label[:-1] if name else name}{decay}{window}")
    for a in r.attribute_points:
        cond = f"in {a.values}" if a.values is not None else f"between {a.min} and {a.max}"
        lines.append(f"{a.points:+g} points when {a.field} {cond}")
    lines.append(f"MQL when the score is at least {r.mql_threshold:g}")
    return lines
