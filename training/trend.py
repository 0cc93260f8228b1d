"""A lead's trend and what changed since its previous score: one rule for the API and the batch.

A salesperson reading "P(SQL) 0.31" cannot tell whether the lead is warming up or cooling down, nor why
the score moved. Every score answer therefore carries, from the lead's **previous scores** (the
service's ``scores`` audit table: one score per moment scored, the newest of its rows when a moment was
refreshed, strictly before the moment being scored):

* ``trend``: the least-squares slope of P(SQL) over the last :data:`TREND_WINDOW` scores (the current one
  and up to ``TREND_WINDOW - 1`` previous ones, one step per score, not per day: leads are scored when they
  act, so calendar time would weigh a burst of activity by its minutes). A slope above
  :data:`DEAD_BAND` (P(SQL) gaining more than one percentage point per score) is ``improving``, below
  ``-DEAD_BAND`` ``declining``, in between ``steady``; a lead without a previous score is ``new``. The dead
  band keeps the calibration's third-decimal wobble from reading as a change.
* ``changes``: the reasons (both sides) present now but not in the previous score, as ``"New: …"``, then
  those present then but not now, as ``"Gone: …"``; empty for a new lead. Reasons are compared by their
  words, which carry their values ("3 demo requests" differs from "2 demo requests").

Pure functions of plain values: the service (:mod:`serving.trail`), ``leadscore score`` and
``leadscore scores export`` call these and nothing else decides a trend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

Trend = Literal["improving", "steady", "declining", "new"]
TRENDS: tuple[Trend, ...] = ("improving", "steady", "declining", "new")
#: scores the slope is fitted over, the current one included
TREND_WINDOW = 5
#: |slope| of P(SQL) per score at or under which the lead is ``steady``
DEAD_BAND = 0.01


@dataclass(frozen=True)
class PastScore:
    """What the rule reads of one previous score: its P(SQL) and its reasons (texts per side)."""

    p_sql: float
    reasons: Mapping[str, Sequence[str]]


def slope(values: Sequence[float]) -> float:
    """Least-squares slope of ``values`` against 0, 1, 2, … (0 for fewer than two values)."""
    n = len(values)
    if n < 2:
        return 0.0
    mean_x = (n - 1) / 2.0
    mean_y = sum(values) / n
    num = sum((i - mean_x) * (v - mean_y) for i, v in enumerate(values))
    den = sum((i - mean_x) ** 2 for i in range(n))
    return num / den


def trend(p_sql: float, previous: Sequence[PastScore]) -> Trend:
    """The trend of a score of ``p_sql`` after ``previous`` (newest first, as the audit reads them)."""
    if not previous:
        return "new"
    window = [s.p_sql for s in reversed(previous[: TREND_WINDOW - 1])] + [p_sql]
    s = slope(window)
    if s > DEAD_BAND:
        return "improving"
    if s < -DEAD_BAND:
        return "declining"
    return "steady"


def _texts(reasons: Mapping[str, Sequence[str]]) -> list[str]:
    return [*reasons.get("positive", ()), *reasons.get("negative", ())]


def changes(reasons: Mapping[str, Sequence[str]], previous: Sequence[PastScore]) -> list[str]:
    """Reasons gained (``"New: …"``) and lost (``"Gone: …"``) since the newest of ``previous``."""
    if not previous:
        return []
    now, before = _texts(reasons), _texts(previous[0].reasons)
    return [f"New: {t}" for t in now if t not in before] + [f"Gone: {t}" for t in before if t not in now]


def annotate(p_sql: float, reasons: Mapping[str, Sequence[str]],
             previous: Sequence[PastScore]) -> tuple[Trend, list[str]]:
    """``(trend, changes)`` of one score (``previous``: newest first; more than the window is ignored)."""
    return trend(p_sql, previous), changes(reasons, previous)
