"""Generator scenarios: what changes in the generated company's world, and when.

Why: a model judged only on a stationary CRM says nothing about a user whose business moves month
to month (the conversion rate of a real lead table can climb several-fold within a year while its
account-level signals leave their past range). ``regime-shift`` plays such a history on top of the
default process, keeping the ground truth exact so the ceiling on the shifted months is known.
The shift covers the last ``late_share`` (40%) of the months: of 12, the last 5, so with the default
split (2 test, 2 calibration, 2 validation months before the 30-day horizon's cut) the calibration and
test months are shifted, and a procedure that learns from its newest months can see the new regime.

* **conversion**: from the shift day on, every open lead's daily SQL hazard gets a log-odds lift (a
  new offer, a new sales motion) on top of the company calibrated to ``settings.generator``, so the
  months before the shift are the default company's; the 30-day SQL label rate of activity moments
  rises about 3.5-fold (0.04 → 0.14 at 5,000 leads, seed 1) and the funnel rates in the summary
  rise with it. The ground truth
  stays exact (:func:`leadscore.generate_truth.exact_truth_shifted`: a day's answer depends on how
  many of its horizon days fall before the shift).
* **account signal**: the company moves upmarket. Most late corporate leads come from new
  enterprise accounts (created at the shift) larger than any account before (``employees`` above
  the default generator's 250,000 cap, revenue in proportion): values a model trained on the past
  has never seen.
* **activity meaning**: from the shift day on, one activity type (``pricing_page_view`` by default:
  the prices moved onto the home page, which every visitor lands on) is emitted by cold and aware
  leads and no longer by engaged and buying ones, so a type that meant interest now means little.

The default scenario is ``None``: the generator then draws exactly what it drew before scenarios
existed (bit-identical tables per seed); scenario draws come from their own random stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from leadscore.generate_world import SECONDS_PER_DAY, STATES

#: the stream id mixed into the seed for scenario draws (so the default stream is untouched)
SCENARIO_STREAM = 7919
#: the largest account the default generator draws (its clip); enterprise accounts start above it
DEFAULT_MAX_EMPLOYEES = 250_000


@dataclass(frozen=True)
class RegimeShift:
    """A history whose last ``late_share`` of the months behaves differently (see the module doc)."""

    name: str = "regime-shift"
    late_share: float = 0.4
    #: log-odds added to the daily SQL hazard on the shifted days
    sql_logit_lift: float = 2.5
    enterprise_share: float = 0.7
    changed_type: str = "pricing_page_view"
    changed_share: float = 0.08

    def late_months(self, months: int) -> int:
        """Whole months at the end of the history that are shifted (at least one, never all)."""
        return int(min(max(1, round(months * self.late_share)), max(months - 1, 1)))

    def shift_day(self, start: pd.Timestamp, end: pd.Timestamp, months: int) -> int:
        """Day index (from ``start``) of the first shifted day: a month boundary."""
        return int((end - pd.DateOffset(months=self.late_months(months)) - start).days)

    def move_upmarket(
        self,
        rng: np.random.Generator,
        accounts: dict[str, np.ndarray],
        lead_acc: np.ndarray,
        late: np.ndarray,
        shift_day: int,
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Re-point most late corporate leads to new enterprise accounts (one per account they left).

        An enterprise account is its old account's new group entity: same industry and country (so a
        lead's country and title language stay consistent), its own name and domain, created just
        before the shift, with more employees than any account before and revenue in proportion.
        Returns the extended account columns and the new lead → account index.
        """
        moved = late & (lead_acc >= 0) & (rng.random(len(lead_acc)) < self.enterprise_share)
        parents, inverse = np.unique(lead_acc[moved], return_inverse=True)
        k, n_acc = len(parents), len(accounts["employees"])
        employees = np.round(DEFAULT_MAX_EMPLOYEES * np.exp(np.abs(rng.normal(0.4, 0.5, k)) + 0.01))
        revenue = np.round(employees * np.exp(rng.normal(np.log(150_000), 0.5, k)), -3)
        created = shift_day * SECONDS_PER_DAY - rng.integers(1, 60, k) * SECONDS_PER_DAY
        extra = {
            "name": np.char.add(accounts["name"][parents].astype(str), " Group"),
            "domain": np.char.add("group.", accounts["domain"][parents].astype(str)),
            "industry": accounts["industry"][parents],
            "industry_idx": accounts["industry_idx"][parents],
            "country": accounts["country"][parents],
            "employees": employees.astype(np.int64),
            "annual_revenue": revenue,
            "created_sec": created.astype(np.int64),
        }
        out = {key: np.concatenate([accounts[key], extra[key]]) for key in accounts}
        new_acc = lead_acc.copy()
        new_acc[moved] = n_acc + inverse
        return out, new_acc

    def change_meaning(
        self,
        rng: np.random.Generator,
        act_type: np.ndarray,
        act_day: np.ndarray,
        act_state: np.ndarray,
        shift_day: int,
        type_names: list[str],
    ) -> np.ndarray:
        """From ``shift_day`` on, ``changed_type`` comes from cold/aware leads, not engaged/buying ones."""
        changed = type_names.index(self.changed_type)
        fallback = type_names.index("page_view")
        late = act_day >= shift_day
        uninterested = act_state <= STATES.index("aware")
        out = act_type.copy()
        out[late & ~uninterested & (act_type == changed)] = fallback
        relabel = late & uninterested & (rng.random(len(act_type)) < self.changed_share)
        out[relabel] = changed
        return out


SCENARIOS: dict[str, RegimeShift | None] = {"default": None, "regime-shift": RegimeShift()}


def scenario_named(name: str) -> RegimeShift | None:
    """The scenario called ``name`` (``default`` is ``None``: the unchanged generator)."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
    return SCENARIOS[name]
