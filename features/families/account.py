"""Account roll-ups: the lead's colleagues at the same account, its opportunities, their activity.

The window of the colleague counts is ``features.account_window_days`` (default 30; the column names
carry it). Leads without an account get NaN ("No company known").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numba import njit

from leadscore.features.kernel import DAY_US, upper
from leadscore.features.registry import Family
from leadscore.features.schema import FeatureSpec, feature

if TYPE_CHECKING:
    from leadscore.config import Settings

NO_COMPANY = "No company known"


def _columns(settings: Settings, params: Any) -> list[FeatureSpec]:
    w = settings.features.account_window_days
    return [
        feature("account_n_leads", "float64", "interest",
                "Leads at the same account created so far, this one included (NaN: no account).",
                "[Only person known at this company|{value} people known at this company]", NO_COMPANY,
                concept="account_people", unit="count"),
        feature("account_has_open_opportunity", "float64", "interest",
                "1 if the account has an open opportunity (NaN: no account).",
                "Company has an open opportunity", NO_COMPANY, concept="account_opportunity", unit="flag"),
        feature("account_had_opportunity", "float64", "interest",
                "1 if the account has had any opportunity so far (NaN: no account).",
                "Company has had an opportunity before", NO_COMPANY, concept="account_opportunity", unit="flag",
                rank=1),
        feature(f"account_other_leads_activities_{w}d", "float64", "interest",
                f"Activities of the other leads of the same account in the last {w} days (NaN: no account).",
                f"{{value}} [activity|activities] by colleagues in the last {w} days", NO_COMPANY,
                concept="colleagues", unit="count", rank=1),
        feature(f"account_other_leads_high_intent_{w}d", "float64", "interest",
                f"High-intent activities of the other leads of the same account in the last {w} days (NaN: no account).",
                f"{{value}} buying [signal|signals] by colleagues in the last {w} days", NO_COMPANY,
                concept="colleagues", unit="count", only_for=True),
    ]


def _params(settings: Settings, params: Any) -> tuple[Any, ...]:
    return (np.int64(settings.features.account_window_days * DAY_US),
            np.array([a.high_intent for a in settings.activities], dtype=np.bool_))


@njit(cache=True)
def high_counts(out: np.ndarray, p: Any, x: Any, lo: int, hi: int) -> None:
    """``out[0, j - lo]``: high-intent rows among the lead's rows ``lo..j`` (a running count)."""
    high = p[1]
    n = 0.0
    for j in range(lo, hi):
        if high[x.act_k[j]]:
            n += 1.0
        out[0, j - lo] = n


@njit(cache=True)
def kernel(row: np.ndarray, off: int, p: Any, x: Any, lead: int, t: int, lo: int, hi: int) -> None:
    win, _, high_seen = p  # the high-intent flags went into high_seen
    a = x.lead_acc[lead]
    if a < 0:
        for i in range(5):
            row[off + i] = np.nan
        return
    row[off] = upper(x.accl_t, x.accl_ptr[a], x.accl_ptr[a + 1], t) - x.accl_ptr[a]
    had = 0.0
    opn = 0.0
    for j in range(x.acco_ptr[a], x.acco_ptr[a + 1]):
        if x.acco_created[j] <= t:
            had = 1.0
            if x.acco_closed[j] > t:
                opn = 1.0
    row[off + 1] = opn
    row[off + 2] = had
    # the lead's own rows in the window are a suffix j..hi-1; its high-intent ones from running counts
    j = upper(x.act_t, lo, hi, t - win)
    own = hi - j
    own_hi = high_seen[0, hi - 1 - lo] - (high_seen[0, j - 1 - lo] if j > lo else 0.0) if hi > lo else 0.0
    # the window's start first: its end is searched after it only (the same position, fewer steps)
    p0, p1 = x.acca_ptr[a], x.acca_ptr[a + 1]
    start = upper(x.acca_t, p0, p1, t - win)
    row[off + 3] = (upper(x.acca_t, start, p1, t) - start) - own
    q0, q1 = x.acch_ptr[a], x.acch_ptr[a + 1]
    start = upper(x.acch_t, q0, q1, t - win)
    row[off + 4] = (upper(x.acch_t, start, q1, t) - start) - own_hi


FAMILY = Family(
    name="account",
    order=80,
    doc="Leads known at the account, its open/past opportunities, colleagues' activity in "
        "features.account_window_days.",
    columns=_columns,
    inputs=frozenset({"lead_acc", "accl_ptr", "accl_t", "acco_ptr", "acco_created", "acco_closed", "acca_ptr",
                      "acca_t", "acch_ptr", "acch_t", "act_t", "act_k"}),
    kernel=kernel,
    params=_params,
    derive=high_counts,
    derived_rows=lambda settings, params: 1,
)
