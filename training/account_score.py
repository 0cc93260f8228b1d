"""The account view: P(an opportunity at the account) and the buying group's coverage, from lead scores.

B2B deals are bought by groups; a per-person score misses an account where three people research at
once. The account score is computed from what the lead model already gives (plus a two-parameter
calibration fitted with it), so it needs no model of its own and serving, batch scoring and the
acceptance test share these pure functions:

* **Account score**: the noisy-OR of the calibrated P(opportunity) of the account's open leads,
  ``1 - Π(1 - p_i)`` (``p_noisy_or``): the probability that at least one of them turns into an
  opportunity within the opportunity horizon *if* the leads converted independently. They do not
  (one deal, one budget), so the noisy-OR over-counts; what it adds over the best single lead is the
  *breadth* of interest (two 20 % leads rank above one 30 % lead), which is what predicts an account
  opportunity better (``tests/test_account_view.py`` measures it). ``p_account`` is the noisy-OR put
  through the bundle's account calibrator (:mod:`training.account_calibration`, fitted on
  point-in-time account moments at training time), the raw noisy-OR when a bundle has none.
* **Buying-group coverage**: each lead has a role from its seniority and department
  (:func:`lead_role`, mapping from the ``accounts:`` config section); a role is *engaged* when one of
  its leads had an activity of its own (actor ``lead``, never a sales touch) in the last
  ``accounts.engaged_days`` (30) days before ``as_of``.

Default role mapping (``configs/accounts.yaml``; first that applies; seniority is the CRM's value,
else what the title implies, as the fit features read it):

========================  ===================================================================
``decision_maker``        seniority ``c_level`` or ``vp``, or department ``executive``
``influencer``            seniority ``head``, ``director`` or ``manager``, or department
                          ``procurement`` or ``finance`` (budget and purchasing gatekeepers)
``user``                  everyone else (``individual``, ``intern``, unknown)
========================  ===================================================================
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from leadscore.config import BUYING_ROLES, AccountsConfig

if TYPE_CHECKING:
    from leadscore.config import Settings
    from leadscore.training.account_calibration import AccountCalibrator

ROLES = BUYING_ROLES
#: the columns of one account row (batch ``--accounts`` output, in order)
ACCOUNT_COLUMNS = ("account_id", "as_of", "p_account", "p_noisy_or", "best_lead_p_opportunity", "open_leads",
                   "scored_leads", "roles_engaged", "decision_maker_engaged", "influencer_engaged", "user_engaged",
                   "decision_maker_leads", "influencer_leads", "user_leads")

#: the default ``accounts:`` section (callers without settings: the pure functions' tests)
_DEFAULT_ACCOUNTS = AccountsConfig()


def _token(v: Any) -> str | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    s = str(v).strip().lower()
    return s or None


def lead_role(seniority: Any, department: Any, accounts: AccountsConfig | None = None) -> str:
    """The buying-group role of a lead: the first of ``accounts.roles`` (default: the module docstring
    table) that lists its seniority or department, else the last role (``user``)."""
    sen, dep = _token(seniority), _token(department)
    for role, rule in (accounts or _DEFAULT_ACCOUNTS).roles.items():
        if sen in rule.seniority or dep in rule.departments:
            return role
    return ROLES[-1]


def lead_roles(leads: pd.DataFrame, settings: Settings | None = None) -> pd.Series:
    """Role per lead (indexed like ``leads``): the CRM's seniority/department, else the title's (``icp.yaml``
    title rules, as the fit features read them) and ``settings.accounts``' role mapping when ``settings``
    are given (the default mapping without)."""
    rules = None
    accounts = settings.accounts if settings is not None else None
    if settings is not None and "job_title" in leads:
        from leadscore.features.fit import fit_rules, title_to_roles

        rules = fit_rules(settings)
    out = []
    for sen, dep, title in zip(leads.get("seniority", pd.Series([None] * len(leads), index=leads.index)),
                               leads.get("department", pd.Series([None] * len(leads), index=leads.index)),
                               leads.get("job_title", pd.Series([None] * len(leads), index=leads.index)),
                               strict=True):
        if rules is not None and (_token(sen) is None or _token(dep) is None):
            t_sen, t_dep = title_to_roles(title, rules)
            sen = sen if _token(sen) is not None else t_sen
            dep = dep if _token(dep) is not None else t_dep
        out.append(lead_role(sen, dep, accounts))
    return pd.Series(out, index=leads.index, dtype=object)


def noisy_or(p: Iterable[float]) -> float:
    """``1 - Π(1 - p_i)`` over the finite probabilities (0 for none), in log space for many small ``p``."""
    a = np.clip(np.asarray([x for x in p if x is not None and x == x], dtype=np.float64), 0.0, 1.0)
    if not len(a):
        return 0.0
    if (a >= 1.0).any():
        return 1.0
    return float(-np.expm1(np.log1p(-a).sum()))


def account_rows(leads: pd.DataFrame, as_of: pd.Timestamp, window_days: int = _DEFAULT_ACCOUNTS.engaged_days,
                 calibrator: AccountCalibrator | None = None) -> pd.DataFrame:
    """One row per account (:data:`ACCOUNT_COLUMNS`) from its open leads: ``p_noisy_or`` and, through
    ``calibrator`` (the bundle's; None: the noisy-OR itself), ``p_account``.

    ``leads``: one row per open lead with ``account_id, lead_id, p_opportunity`` (NaN: not scored; it
    counts for coverage, not for the score), ``role`` (:func:`lead_role`) and ``last_engaged_at`` (the
    lead's latest own activity at or before ``as_of``, NaT for none). Leads without account are skipped.
    """
    as_of = pd.Timestamp(as_of)
    frame = leads[leads["account_id"].notna()]
    since = as_of - pd.Timedelta(days=window_days)
    last = pd.to_datetime(frame["last_engaged_at"], utc=True)
    engaged = ((last > since) & (last <= as_of)).to_numpy()
    p = frame["p_opportunity"].to_numpy(dtype=np.float64)
    roles = frame["role"].to_numpy(dtype=object)
    rows = []
    for account, idx in frame.groupby("account_id", sort=True).indices.items():
        ps = p[idx]
        scored = ps[~np.isnan(ps)]
        row: dict[str, Any] = {"account_id": str(account), "as_of": as_of, "p_noisy_or": noisy_or(scored),
                               "best_lead_p_opportunity": float(scored.max()) if len(scored) else 0.0,
                               "open_leads": len(idx), "scored_leads": len(scored)}
        for role in ROLES:
            mine = roles[idx] == role
            row[f"{role}_leads"] = int(mine.sum())
            row[f"{role}_engaged"] = int((mine & engaged[idx]).sum())
        row["roles_engaged"] = [r for r in ROLES if row[f"{r}_engaged"] > 0]
        rows.append(row)
    out = pd.DataFrame(rows, columns=list(ACCOUNT_COLUMNS))
    out["as_of"] = pd.to_datetime(out["as_of"], utc=True)
    out["p_account"] = out["p_noisy_or"] if calibrator is None else calibrator.apply(out)
    return out


def last_own_activity(activities: pd.DataFrame, as_of: pd.Timestamp) -> pd.Series:
    """Per lead, the time of its latest own activity (actor ``lead``) at or before ``as_of``."""
    acts = activities
    t = pd.to_datetime(acts["occurred_at"], utc=True)
    mine = (t <= pd.Timestamp(as_of)).to_numpy()
    if "actor" in acts:
        mine = mine & (acts["actor"].fillna("lead").astype(str) == "lead").to_numpy()
    return t[mine].groupby(acts["lead_id"][mine].astype(str).to_numpy()).max()


def open_lead_frame(history_leads: pd.DataFrame, scores: pd.DataFrame, last_engaged: pd.Series,
                    settings: Settings | None = None) -> pd.DataFrame:
    """The input of :func:`account_rows` for batch scoring: the scored (open) leads of ``scores``
    (``lead_id, p_opportunity``) with their account, role and latest own activity."""
    leads = history_leads.assign(lead_id=history_leads["lead_id"].astype(str)).set_index("lead_id")
    ids = scores["lead_id"].astype(str)
    sub = leads.reindex(ids)
    return pd.DataFrame({
        "lead_id": ids.to_numpy(), "account_id": sub["account_id"].to_numpy(dtype=object),
        "p_opportunity": scores["p_opportunity"].to_numpy(dtype=np.float64),
        "role": lead_roles(sub.reset_index(drop=True), settings).to_numpy(dtype=object),
        "last_engaged_at": pd.to_datetime(last_engaged.reindex(ids.to_numpy()).to_numpy(), utc=True),
    })
