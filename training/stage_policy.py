"""Stage thresholds on calibrated probabilities: the part of the scoring bundle that recommends a stage.

Part of the bundle contract (:mod:`training.bundle` re-exports :class:`StagePolicy`); kept in its own
module because it is the funnel's logic, not the models'.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

_FUNNEL_RANK = {"subscriber": 0, "lead": 1, "recycled": 1, "mql": 2, "sql": 3}



class StagePolicy(BaseModel):
    """Stage thresholds on calibrated probabilities, the SLA policy that set them, what they promise.

    Fitted by :func:`training.sla.fit_stage_policy`; stored in the bundle as ``model_dump()`` JSON and
    evaluated by the service on every score, so :meth:`stage` is a handful of float comparisons.
    """

    model_config = ConfigDict(extra="forbid")

    mql_threshold: float = Field(description="MQL when calibrated P(SQL within H days) reaches this.")
    sql_threshold: float = Field(description="SQL recommended when calibrated P(opportunity) reaches this.")
    hysteresis: float = Field(ge=0, lt=1, description="Share below a threshold a score must fall to leave.")
    policy: dict[str, Any] = Field(default_factory=dict, description="The SLA policy that set the thresholds.")
    expected: dict[str, Any] = Field(default_factory=dict, description="Outcomes on the months fitted on.")
    rule_mql_threshold: float = Field(description="The rule-based points score's MQL threshold compared with.")
    recycle_after_days: int | None = 45
    sales_owned_stages: list[str] = Field(default_factory=lambda: ["opportunity", "customer", "disqualified"])

    def stage(
        self,
        p_sql: float,
        p_opportunity: float,
        previous_stage: str | None,
        *,
        days_in_stage: float | None = None,
    ) -> str:
        """Recommended lifecycle stage (``lead``, ``mql``, ``sql``; or the unchanged previous stage).

        Why the rules are shaped like this:
        - entering a stage needs the score to reach its threshold (the same crossing the thresholds were
          fitted on); leaving it needs the score to fall ``hysteresis`` (a share) below it, so a lead
          whose score wobbles around the threshold changes stage once, not on every activity;
        - stages set by sales (opportunity, customer, disqualified) are never overridden by a model;
        - ``subscriber`` and ``recycled`` leads stay what they are until they qualify;
        - with ``days_in_stage`` given, an MQL/SQL that made no progress for ``recycle_after_days``
          returns to marketing as ``recycled``; a recycled lead re-qualifies only when it clears the
          threshold by the hysteresis band, i.e. on new evidence, not on the score that was recycled.
        """
        prev = previous_stage or "lead"
        if prev in self.sales_owned_stages:
            return prev
        keep = 1.0 - self.hysteresis
        lift = 1.0 + self.hysteresis
        if prev == "sql":
            sql_bar, mql_bar = self.sql_threshold * keep, self.mql_threshold * keep
        elif prev == "mql":
            sql_bar, mql_bar = self.sql_threshold, self.mql_threshold * keep
        elif prev == "recycled":
            sql_bar, mql_bar = self.sql_threshold * lift, self.mql_threshold * lift
        else:
            sql_bar, mql_bar = self.sql_threshold, self.mql_threshold
        if p_opportunity >= sql_bar:
            new = "sql"
        elif p_sql >= mql_bar:
            new = "mql"
        else:
            new = prev if prev in ("subscriber", "recycled") else "lead"
        if (
            days_in_stage is not None
            and self.recycle_after_days is not None
            and prev in ("mql", "sql")
            and days_in_stage >= self.recycle_after_days
            and _FUNNEL_RANK[new] <= _FUNNEL_RANK[prev]
        ):
            return "recycled"
        return new


__all__ = ["StagePolicy"]
