"""SLA lifecycle stages: thresholds on calibrated probabilities, fitted from the SLA policy.

The SLA reviewers sign a policy in words ("sales follows up at most 300 MQLs a month", "an MQL should
become a SQL three times in ten", "a follow-up costs 150, a SQL is worth 1000"). This module turns that
policy into numbers on calibrated probabilities, fitted on the calibration/validation months by
replaying the scored moments (:mod:`training.replay`), and keeps the expected outcomes next to the
thresholds so a reviewer can check them later against reality. The result is a
:class:`training.bundle.StagePolicy`, which ships inside the scoring bundle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from leadscore.training.bundle import StagePolicy
from leadscore.training.config import MQLPolicy
from leadscore.training.replay import Replay, with_ci

if TYPE_CHECKING:
    from leadscore.config import Settings


# --------------------------------------------------------------------------------------------------
# Fitting the thresholds
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fitted:
    threshold: float
    met: bool
    note: str


def _fit_mql(replay: Replay, policy: MQLPolicy) -> Fitted:
    """The MQL threshold on P(SQL) that the policy asks for, on the months of ``replay``."""
    rec = replay.records("p_sql")
    cands = rec.candidates()
    if policy.kind == "capacity":
        assert policy.capacity_per_month is not None
        monthly = replay.monthly_counts("p_sql", cands)
        ok = np.flatnonzero(monthly.max(axis=0) <= policy.capacity_per_month + 1e-9)
        t = float(cands[ok[0]])  # the highest candidate always gives zero MQLs, so ok is non-empty
        binding = ok[0] > 0
        note = (
            f"lowest threshold with at most {policy.capacity_per_month} MQLs in every month"
            if binding
            else f"capacity {policy.capacity_per_month}/month is not binding: every lead fits"
        )
        return Fitted(t, True, note)
    curves = replay.curves("p_sql", cands)
    trusted = curves["labelled_sql"] >= policy.min_labelled_mqls
    if policy.kind == "target_rate":
        assert policy.target_rate is not None
        ok = np.flatnonzero(trusted & (curves["mql_to_sql_rate"] >= policy.target_rate))
        if len(ok):
            return Fitted(float(cands[ok[0]]), True, f"lowest threshold whose MQL->SQL rate reaches {policy.target_rate}")
        return _unreachable(policy.target_rate, curves["mql_to_sql_rate"], trusted, f"target MQL->SQL rate {policy.target_rate}")
    assert policy.value_of_sql is not None and policy.cost_of_follow_up is not None
    net = curves["mqls_per_month"] * (policy.value_of_sql * curves["mql_to_sql_rate"] - policy.cost_of_follow_up)
    net = np.where(trusted, net, -np.inf)
    if not np.isfinite(net).any():
        return Fitted(float(cands[-1]), False, f"fewer than {policy.min_labelled_mqls} labelled MQLs at any threshold")
    i = int(np.argmax(net))
    if net[i] <= 0:
        return Fitted(float(cands[-1]), False, "no threshold has a positive expected net value: no MQLs")
    return Fitted(float(cands[i]), True, "threshold with the highest expected net value per month")


def _unreachable(level: float, rate: np.ndarray, trusted: np.ndarray, what: str) -> Fitted:
    """Fallback when no threshold reaches the target rate on the fit months: the calibrated probability.

    Why not "the threshold with the best rate": with a weak or constant model that threshold can be the
    lowest score, which would hand every lead over. Calibrated probabilities mean what they say, so
    "P >= target" is the threshold that would reach the rate if the model could tell the leads apart;
    with a weak model it simply hands over few or none.
    """
    best = np.where(trusted, rate, -np.inf).max() if trusted.any() else float("nan")
    seen = f"best seen {best:.3f}" if np.isfinite(best) else "too few labelled moments"
    return Fitted(level, False, f"{what} not reachable ({seen}); using calibrated probability >= {level}")


def _fit_sql(replay: Replay, settings: Settings, min_labelled: int) -> Fitted:
    """The SQL-recommended threshold on P(opportunity)."""
    level = settings.sla.sql_recommend_p_opportunity
    if settings.sla.sql_policy_kind == "probability":
        return Fitted(level, True, f"recommend SQL when calibrated P(opportunity) >= {level}")
    rec = replay.records("p_opportunity")
    cands = rec.candidates()
    curves = replay.curves("p_opportunity", cands)
    trusted = curves["labelled_opp"] >= min_labelled
    ok = np.flatnonzero(trusted & (curves["mql_to_opp_rate"] >= level))
    if len(ok):
        return Fitted(float(cands[ok[0]]), True, f"lowest threshold whose SQL recommendations reach opportunity rate {level}")
    return _unreachable(level, curves["mql_to_opp_rate"], trusted, f"target SQL->opportunity rate {level}")


def expected_outcomes(replay: Replay, column: str, threshold: float, samples: int, seed: int) -> dict[str, Any]:
    """Outcomes of the first-crossing policy ``column >= threshold`` on the replay, with 95% CIs."""
    rows = replay.at(column, threshold)
    point = replay.outcomes(rows)
    cis = replay.bootstrap(lambda w: replay.outcomes(rows, w), samples, seed)
    return with_ci(point, cis)


def fit_stage_policy(
    scored: pd.DataFrame,
    settings: Settings,
    override: MQLPolicy | None = None,
    *,
    warmup: pd.DataFrame | None = None,
) -> StagePolicy:
    """Fit the stage thresholds on the calibration/validation months' scoring moments.

    ``scored`` has ``lead_id, as_of, p_sql, p_opportunity, rule_score, y_sql, y_opp`` (labels 1/0, NaN
    censored) and optionally ``days_since_created`` and the segment columns. ``override`` replaces the
    configured MQL policy (the reviewers' what-if). ``warmup``: earlier scored moments that only mark
    leads already MQL (without it the first ``sla.warmup_months`` of ``scored`` play that part, see
    :class:`Replay`). The returned policy carries the expected outcomes at both the model's and the
    rule's threshold on these months, so the bundle documents its promise.
    """
    mql_policy = override or settings.sla.mql_policy
    replay = Replay(scored, warmup=warmup, warmup_months=settings.sla.warmup_months)
    mql = _fit_mql(replay, mql_policy)
    sql = _fit_sql(replay, settings, mql_policy.min_labelled_mqls)
    samples, seed = settings.training.bootstrap_samples, settings.training.seed
    model = expected_outcomes(replay, "p_sql", mql.threshold, samples, seed)
    sql_rec = expected_outcomes(replay, "p_opportunity", sql.threshold, samples, seed)
    rule = expected_outcomes(replay, "rule_score", settings.rules.mql_threshold, samples, seed)
    expected: dict[str, Any] = {
        "months": replay.months,
        "leads": replay.n_leads,
        "moments": replay.n_moments,
        "warmup": replay.warmup_note,
        "matured_until": replay.matured_until,
        "mql": model,
        "sql_recommended": {
            "sqls": sql_rec["mqls"],
            "sqls_per_month": sql_rec["mqls_per_month"],
            "by_month": sql_rec["by_month"],
            "sql_to_opp_rate": sql_rec["mql_to_opp_rate"],
            "opp_recall": sql_rec["opp_recall"],
        },
        "rule_mql": rule,
    }
    if mql_policy.value_of_sql is not None and mql_policy.cost_of_follow_up is not None:
        rate = model["mql_to_sql_rate"]["value"]
        per_month = model["mqls_per_month"]["value"]
        if rate is not None and per_month is not None:
            expected["net_value_per_month"] = round(
                per_month * (mql_policy.value_of_sql * rate - mql_policy.cost_of_follow_up), 2
            )
    return StagePolicy(
        mql_threshold=mql.threshold,
        sql_threshold=sql.threshold,
        hysteresis=settings.sla.hysteresis,
        policy={
            "mql": {**mql_policy.model_dump(mode="json"), "met": mql.met, "note": mql.note},
            "sql": {
                "kind": settings.sla.sql_policy_kind,
                "level": settings.sla.sql_recommend_p_opportunity,
                "met": sql.met,
                "note": sql.note,
            },
            "hysteresis": settings.sla.hysteresis,
            "recycle_after_days": settings.sla.recycle_after_days,
            "follow_up_hours": settings.sla.follow_up_hours,
            "horizons": settings.horizons.model_dump(mode="json"),
            "config_hash": settings.config_hash(),
        },
        expected=expected,
        rule_mql_threshold=settings.rules.mql_threshold,
        recycle_after_days=settings.sla.recycle_after_days,
        sales_owned_stages=list(settings.sla.sales_owned_stages),
    )
