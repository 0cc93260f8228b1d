"""The SLA operations review: what sales did with each MQL, from the CRM history alone (issue 16).

The SLA review of the model (:mod:`leadscore.training.report`) compares MQL thresholds; this one
looks at the other half of the agreement, the way the monthly marketing-sales review does: per month,
per owner and per team, the MQLs handed over, how fast sales touched them (median hours, share within
``sla.follow_up_hours``), the attempts before a hand-back, acceptance (MQL→SQL) and the reasons of
rejections, what became of recycled leads, the conversion of every stage against the SLA's targets,
acceptance by follow-up delay band (with Wilson intervals), and whether model-set MQLs are rejected
less often than rule-set ones.

A **hand-over** is a stage change to ``mql`` set by the rule or the model (an MQL sales set itself at
qualification is no hand-over). It lasts until the lead's next stage change; its first touch is the
lead's first sales-side activity (``actor = sales``) after it, before it ended; it is **accepted**
when it ends in ``sql`` (or beyond) within ``sla.ops.acceptance_days``, and counted for acceptance
only once that window is over (matured) before the cut-off.

An owner's **team** (:func:`owner_teams`): ``sla.ops.teams`` in ``configs/sla.yaml`` when it names the
owner, else the team the CRM declares in its ``manifest.json`` (``owner_teams``: the importers read
HubSpot's ``HubSpot Team`` and Salesforce's ``Owner Role``; the generated CRM's reps have teams), else
``(no team)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy.stats import binomtest

if TYPE_CHECKING:
    from leadscore.config import Settings
    from leadscore.history import CRMHistory

QUALIFIED = ("sql", "opportunity", "customer")
REJECTED = ("recycled", "disqualified")
UNASSIGNED = "(unassigned)"
NO_TEAM = "(no team)"


def owner_teams(manifest: Mapping[str, Any], settings: Settings) -> dict[str, str]:
    """Owner -> team: what the CRM declares (``owner_teams`` in its manifest, top level from an importer or
    in the generator's ``sla`` entry), overridden by ``sla.ops.teams``."""
    declared: dict[str, str] = {}
    for source in (manifest.get("sla"), manifest):
        teams = source.get("owner_teams") if isinstance(source, Mapping) else None
        if isinstance(teams, Mapping):
            declared.update({str(k): str(v) for k, v in teams.items() if v is not None})
    return {**declared, **settings.sla.ops.teams}


def rate(k: int, n: int, confidence: float) -> dict[str, Any]:
    """``k/n`` with its Wilson interval (None when nothing was counted)."""
    if n <= 0:
        return {"value": None, "ci_low": None, "ci_high": None, "k": int(k), "n": int(n)}
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    lo, hi = ci.low, ci.high
    return {"value": round(k / n, 4), "ci_low": round(float(lo), 4), "ci_high": round(float(hi), 4),
            "k": int(k), "n": int(n)}


def handovers(history: CRMHistory, settings: Settings, teams: Mapping[str, str] | None = None) -> pd.DataFrame:
    """One row per hand-over (module docstring): when, owner, team (``teams``: owner -> team), first touch,
    attempts, how it ended."""
    sc = history.stage_changes.sort_values("changed_at", kind="stable")
    sc = sc.assign(lead_id=sc["lead_id"].astype("str"))
    if "reason" not in sc.columns:
        sc = sc.assign(reason=None)
    mql = sc[(sc["stage"] == "mql") & sc["set_by"].isin(["rule", "model"])]
    h = mql[["lead_id", "changed_at", "set_by"]].rename(columns={"changed_at": "at"}).reset_index(drop=True)
    h["hid"] = np.arange(len(h))
    nxt = sc[sc["stage"] != "mql"][["lead_id", "changed_at", "stage", "reason"]]
    h = pd.merge_asof(h.sort_values("at"), nxt.rename(columns={"changed_at": "end", "stage": "end_stage"}),
                      left_on="at", right_on="end", by="lead_id", direction="forward", allow_exact_matches=False)
    acts = history.activities
    actor = acts["actor"] if "actor" in acts.columns else pd.Series("lead", index=acts.index)
    sales = acts[(actor == "sales") | acts["type"].isin(settings.sales_activity_names)]
    touches = pd.DataFrame({"lead_id": sales["lead_id"].astype("str").to_numpy(),
                            "t": sales["occurred_at"].to_numpy(), "type": sales["type"].astype("str").to_numpy()})
    cutoff = pd.Timestamp(history.cutoff)
    h["until"] = h["end"].fillna(cutoff).clip(upper=cutoff)
    pairs = h[["hid", "lead_id", "at", "until"]].merge(touches, on="lead_id")
    pairs = pairs[(pairs["t"] >= pairs["at"]) & (pairs["t"] < pairs["until"])]
    attempts = pairs[pairs["type"] != "meeting_held"].groupby("hid").size()
    first = pairs.groupby("hid")["t"].min()
    h = h.set_index("hid").sort_index()
    h["first_touch"] = first.reindex(h.index)
    h["attempts"] = attempts.reindex(h.index).fillna(0).astype(int)
    h["delay_hours"] = (h["first_touch"] - h["at"]).dt.total_seconds() / 3600
    owners = history.leads.assign(lead_id=history.leads["lead_id"].astype("str")).set_index("lead_id")
    owner = owners["owner"] if "owner" in owners.columns else pd.Series(dtype="str")
    h["owner"] = h["lead_id"].map(owner).fillna(UNASSIGNED).astype("str")
    h["team"] = h["owner"].map(dict(teams or {})).fillna(NO_TEAM).astype("str")
    h["month"] = h["at"].dt.strftime("%Y-%m")
    window = pd.Timedelta(days=settings.sla.ops.acceptance_days)
    h["matured"] = h["at"] + window <= cutoff
    h["accepted"] = h["end_stage"].isin(QUALIFIED) & (h["end"] - h["at"] <= window)
    h["rejected"] = h["end_stage"].isin(REJECTED)
    bands = settings.sla.ops.delay_bands_hours
    labels = settings.sla.ops.band_labels()
    band_idx = np.searchsorted(np.asarray(bands, dtype=float), h["delay_hours"].fillna(-1), side="right")
    h["band"] = np.where(h["first_touch"].notna(), np.array(labels, dtype=object)[band_idx], None)
    return h.reset_index()


def _follow_up(h: pd.DataFrame, settings: Settings) -> dict[str, Any]:
    target = settings.sla.follow_up_hours
    touched = h["first_touch"].notna()
    within = int((h["delay_hours"] <= target).sum())
    return {"handovers": len(h), "touched": int(touched.sum()),
            "median_hours": round(float(h["delay_hours"].median()), 2) if touched.any() else None,
            "share_within_target": round(within / len(h), 4) if len(h) else None,
            "target_hours": target, "target_share": settings.sla.ops.target_share_within,
            "meets_target": bool(len(h) and within / len(h) >= settings.sla.ops.target_share_within)}


def _group(h: pd.DataFrame, key: str, settings: Settings) -> list[dict[str, Any]]:
    conf = settings.sla.ops.confidence
    out = []
    for value, g in h.groupby(key, sort=True):
        m = g[g["matured"]]
        out.append({key: str(value), **_follow_up(g, settings),
                    "attempts_before_hand_back": round(float(g.loc[g["rejected"], "attempts"].mean()), 2)
                    if g["rejected"].any() else None,
                    "acceptance": rate(int(m["accepted"].sum()), len(m), conf),
                    "rejected": int(g["rejected"].sum())})
    return out


def _stages(history: CRMHistory, leads: pd.Index, settings: Settings) -> list[dict[str, Any]]:
    """Conversion of each step (leads that reached the first stage and later the next) vs the target."""
    sc = history.stage_changes
    sc = sc[sc["lead_id"].astype("str").isin(leads)]
    reached = {s: set(sc.loc[sc["stage"].isin(QUALIFIED[QUALIFIED.index(s):] if s in QUALIFIED else [s]),
                             "lead_id"].astype("str")) for s in ("mql", "sql", "opportunity", "customer")}
    reached["lead"] = set(leads)
    reached["mql"] |= reached["sql"]
    out = []
    for a, b in (("lead", "mql"), ("mql", "sql"), ("sql", "opportunity"), ("opportunity", "customer")):
        step = f"{a}->{b}"
        r = rate(len(reached[a] & reached[b]), len(reached[a]), settings.sla.ops.confidence)
        target = settings.sla.ops.targets.get(step)
        out.append({"step": step, "rate": r, "target": target,
                    "meets_target": None if target is None or r["value"] is None else bool(r["value"] >= target)})
    return out


def _recycled(history: CRMHistory, leads: pd.Index, settings: Settings) -> dict[str, Any]:
    sc = history.stage_changes.assign(lead_id=history.stage_changes["lead_id"].astype("str"))
    rec = sc[(sc["stage"] == "recycled") & sc["lead_id"].isin(leads)]
    first = rec.groupby("lead_id")["changed_at"].min()
    later = sc.merge(first.rename("recycled_at"), left_on="lead_id", right_index=True)
    later = later[later["changed_at"] > later["recycled_at"]]
    re_mql = set(later.loc[later["stage"] == "mql", "lead_id"])
    re_sql = set(later.loc[later["stage"].isin(QUALIFIED), "lead_id"])
    return {"count": len(rec), "leads": len(first), "later_mql": len(re_mql), "later_sql": len(re_sql),
            "later_sql_rate": rate(len(re_sql), len(first), settings.sla.ops.confidence)}


def _rejections(h: pd.DataFrame, settings: Settings) -> dict[str, Any]:
    rej = h[h["rejected"]]
    reasons = rej["reason"].fillna("(no reason)").astype("str")
    counts = reasons.value_counts()
    by_reason = {}
    for code, k in counts.items():
        entry = settings.reasons.get(code)
        by_reason[str(code)] = {"count": int(k), "share": round(int(k) / len(rej), 4),
                                "label": entry.label if entry else str(code),
                                "label_rule": entry.label_rule if entry else "censor"}
    by_setter = {}
    for setter, g in h[h["matured"] | h["rejected"]].groupby("set_by"):
        by_setter[str(setter)] = rate(int(g["rejected"].sum()), len(g), settings.sla.ops.confidence)
    return {"count": len(rej), "by_reason": by_reason, "rate_by_set_by": by_setter}


def sla_ops_numbers(history: CRMHistory, settings: Settings, months: int | None = None,
                    truth: dict[str, Any] | None = None, source: str = "",
                    teams: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Every number of the review (the HTML is rendered from these only); ``truth`` is the generator's
    ``manifest.json`` ``sla`` entry, shown beside the delay bands when the window is the whole history;
    ``teams`` owner -> team (:func:`owner_teams`; None: the configured ``sla.ops.teams`` and, from
    ``truth``, the generator's)."""
    cutoff = pd.Timestamp(history.cutoff)
    if teams is None:
        teams = owner_teams({"sla": truth or {}}, settings)
    h = handovers(history, settings, teams)
    start = None if months is None else cutoff - pd.DateOffset(months=months)
    if start is not None:
        h = h[h["at"] >= start]
    leads = history.leads
    created = leads["created_at"] >= start if start is not None else pd.Series(True, index=leads.index)
    window_leads = pd.Index(leads.loc[created, "lead_id"].astype("str"))
    conf = settings.sla.ops.confidence
    matured = h[h["matured"] & h["first_touch"].notna()]
    bands = []
    truth_rows = (truth or {}).get("by_band") if start is None else None
    for i, label in enumerate(settings.sla.ops.band_labels()):
        g = matured[matured["band"] == label]
        row: dict[str, Any] = {"band": label, "acceptance": rate(int(g["accepted"].sum()), len(g), conf)}
        if truth_rows and i < len(truth_rows):
            row["truth"] = truth_rows[i]["expected_acceptance"]
        bands.append(row)
    m_all = h[h["matured"]]
    return {
        "title": "SLA operations review", "source": source, "cutoff": cutoff.isoformat(),
        "months": sorted(h["month"].unique().tolist()), "config_hash": settings.config_hash(),
        "generated_at": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"),
        "follow_up": _follow_up(h, settings),
        "attempts": {"before_hand_back_mean": round(float(h.loc[h["rejected"], "attempts"].mean()), 2)
                     if h["rejected"].any() else None,
                     "distribution": {str(k): int(v) for k, v in
                                      h.loc[h["rejected"], "attempts"].value_counts().sort_index().items()}},
        "acceptance": rate(int(m_all["accepted"].sum()), len(m_all), conf),
        "rejections": _rejections(h, settings),
        "recycled": _recycled(history, window_leads, settings),
        "stages": _stages(history, window_leads, settings),
        "delay_bands": bands,
        "truth_multiplier": (truth or {}).get("multiplier") if truth_rows else None,
        "by_month": _group(h, "month", settings),
        "by_owner": _group(h, "owner", settings),
        "by_team": _group(h, "team", settings),
        "team_members": {str(t): sorted(g["owner"].unique().tolist()) for t, g in h.groupby("team", sort=True)},
        "notes": [f"{int((~h['first_touch'].notna()).sum())} hand-overs ended (or are open) without a sales touch",
                  f"acceptance counts hand-overs whose {settings.sla.ops.acceptance_days}-day window ended "
                  f"before the cut-off ({len(m_all)} of {len(h)})"],
    }


def write_sla_ops_report(data: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """``out`` (HTML) and the JSON beside it, from the same numbers."""
    import json

    from leadscore.training.sla_ops_html import render_sla_ops_html

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_sla_ops_html(data), encoding="utf-8")
    js = out.with_suffix(".json")
    js.write_text(json.dumps(data, indent=2, default=str))
    return out, js
