"""The SLA review report: the model's MQL threshold against the rule-based score's, on the test months.

SLA reviewers decide, each month or quarter, where the MQL hand-off should sit. They need to see, on
months neither threshold was fitted on, what each policy would have handed to sales (volume), how much
of it converted (MQL->SQL, MQL->opportunity), what it missed (recall of the eventual SQLs and
opportunities), how early it flagged leads, who changes hands if they switch, and whether the picture
holds per source, industry and company size. Volume and quality trade off, so the two policies are
also compared at equal volume (the rule threshold that hands over as many MQLs as the model and the
model threshold that hands over as many as the rule).

One JSON dict holds every number (this module); the HTML is rendered from it only
(:mod:`training.report_html`), so the two cannot disagree.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from leadscore.training.bundle import StagePolicy
from leadscore.training.replay import SEGMENT_COLUMNS, Replay, exact_or_none, round_or_none, with_ci
from leadscore.training.report_html import render_html

if TYPE_CHECKING:
    from leadscore.config import Settings

POLICIES = ("model", "rule", "model_at_rule_volume", "rule_at_model_volume")
POLICY_COLUMN = {"model": "p_sql", "rule": "rule_score", "model_at_rule_volume": "p_sql", "rule_at_model_volume": "rule_score"}
ACCEPTANCE_RATIO = 1.5
NOTES = (
    "A lead becomes an MQL at its first scoring moment whose score reaches the threshold; later moments "
    "of the same lead do not count again.",
    "An MQL converted if the lead became SQL within the SQL horizon (opportunity within the opportunity "
    "horizon) after its MQL moment. MQLs whose horizon runs past the data cut-off are censored: they "
    "count in the volume but are excluded from the rates. Because a lead that converted is labelled even "
    "when its horizon has not elapsed, moments after the last one with an observable non-conversion are "
    "also excluded from the rates (see matured_until); otherwise rates near the cut-off would be inflated.",
    "Recall: share of the leads that became SQL (opportunity) after some test-month moment that the "
    "policy flagged as MQL before that.",
    "95% confidence intervals: percentile bootstrap resampling leads (all moments of a lead together).",
)


# --------------------------------------------------------------------------------------------------
# Numbers
# --------------------------------------------------------------------------------------------------


def _segment_codes(replay: Replay, column: str, min_leads: int) -> tuple[np.ndarray, list[str]]:
    """Per lead: code of its segment (value at its first moment); small segments folded into (other)."""
    if column in replay.frame:
        first = replay.frame.groupby(replay.lead_code, sort=True)[column].first()
        values = first.astype("object").where(first.notna(), "(missing)").astype(str)
    else:
        values = pd.Series("(missing)", index=range(replay.n_leads))
    counts = values.value_counts()
    small = counts[counts < min_leads].index
    if len(small) > 1:
        values = values.where(~values.isin(small), "(other)")
    names = sorted(values.unique().tolist())
    codes = values.map({n: i for i, n in enumerate(names)}).to_numpy(dtype="int64")
    return codes, names


def _segment_stats(
    replay: Replay, rows: np.ndarray, w_lead: np.ndarray, seg: np.ndarray, n_seg: int
) -> dict[str, np.ndarray]:
    """Per segment: leads, new MQLs, MQL->SQL rate and SQL recall of the first crossings ``rows``."""
    flagged = replay.lead_code[rows]
    rows = replay.window(rows)
    leads = replay.lead_code[rows]
    w = w_lead[leads]
    s = seg[leads]
    y = replay.y_sql[rows]
    lab = ~np.isnan(y)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "leads": np.bincount(seg, weights=w_lead, minlength=n_seg),
            "mqls": np.bincount(s, weights=w, minlength=n_seg),
            "mql_to_sql_rate": np.bincount(s, weights=w * np.nan_to_num(y), minlength=n_seg)
            / np.bincount(s, weights=w * lab, minlength=n_seg),
            "sql_recall": np.bincount(seg[flagged], weights=w_lead[flagged] * replay.ever_sql[flagged], minlength=n_seg)
            / np.bincount(seg, weights=w_lead * replay.ever_sql, minlength=n_seg),
        }


def _switch_stats(replay: Replay, gained: np.ndarray, lost: np.ndarray, w_lead: np.ndarray) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, rows in (("gained", gained), ("lost", lost)):
        leads = replay.lead_code[rows]
        w = w_lead[leads]
        y = replay.y_sql[rows]
        lab = ~np.isnan(y)
        out[f"{name}.leads"] = float(w.sum())
        out[f"{name}.eventual_sqls"] = float(w[replay.ever_sql[leads]].sum())
        out[f"{name}.eventual_opps"] = float(w[replay.ever_opp[leads]].sum())
        den = float(w[lab].sum())
        out[f"{name}.mql_to_sql_rate"] = float((w * np.nan_to_num(y)).sum()) / den if den > 0 else float("nan")
    return out


def _calibration(y: np.ndarray, p: np.ndarray, bins: int) -> dict[str, list[float | None]]:
    """Mean predicted vs observed rate in equal-count bins of labelled moments."""
    keep = ~np.isnan(y)
    y, p = y[keep], p[keep]
    order = np.argsort(p, kind="stable")
    groups = [g for g in np.array_split(order, min(bins, max(len(order), 1))) if len(g)]
    return {
        "predicted": [round_or_none(float(p[g].mean()), 4) for g in groups],
        "observed": [round_or_none(float(y[g].mean()), 4) for g in groups],
        "moments": [len(g) for g in groups],
    }


def _gains(replay: Replay, column: str) -> dict[str, list[float | None]]:
    """Leads ranked by their highest score: share of leads contacted vs share of eventual SQLs found."""
    win = replay.in_window
    maxima = pd.Series(replay.frame[column].to_numpy()[win]).groupby(replay.lead_code[win]).max().to_numpy()
    order = np.argsort(-maxima, kind="stable")
    hits = np.cumsum(replay.ever_sql[order])
    total = max(int(replay.ever_sql.sum()), 1)
    idx = np.unique(np.linspace(0, replay.n_leads, 51).round().astype(int))
    found = np.concatenate([[0], hits])[idx]
    return {
        "share_of_leads": [round_or_none(i / replay.n_leads, 4) for i in idx],
        "share_of_sqls": [round_or_none(f / total, 4) for f in found],
    }


def _curve(replay: Replay, column: str, extra: list[float]) -> dict[str, list[float | None]]:
    rec = replay.records(column)
    grid = np.unique(np.concatenate([np.quantile(rec.value, np.linspace(0, 1, 120)), extra]))
    curves = replay.curves(column, grid)
    keys = ("threshold", "mqls_per_month", "mql_to_sql_rate", "sql_recall")
    return {k: [round_or_none(float(v), 4) for v in curves[k]] for k in keys}


def _funnel(replay: Replay, rows: np.ndarray) -> dict[str, list[int]]:
    month = replay.month_code[rows]
    m = replay.n_months

    def count(mask: np.ndarray) -> list[int]:
        return [int(v) for v in np.bincount(month[mask], minlength=m)]

    y_sql, y_opp = replay.y_sql[rows], replay.y_opp[rows]
    return {
        "mqls": count(np.ones(len(rows), dtype=bool)),
        "sql_within_horizon": count(y_sql == 1),
        "opportunity_within_horizon": count(y_opp == 1),
        "sql_label_censored": count(np.isnan(y_sql)),
        "opportunity_label_censored": count(np.isnan(y_opp)),
    }


def _listed(replay: Replay, rows: np.ndarray, column: str, limit: int) -> list[dict[str, Any]]:
    """The gained/lost leads by name, highest score first, with what happened to them."""
    frame = replay.frame.iloc[rows]
    order = np.argsort(-frame[column].to_numpy(), kind="stable")[:limit]
    out = []
    for i in order:
        r = frame.iloc[i]
        lead = replay.lead_code[rows[i]]
        out.append(
            {
                "lead_id": str(r["lead_id"]),
                "mql_at": r["as_of"].strftime("%Y-%m-%d %H:%M"),
                "p_sql": round_or_none(float(r["p_sql"]), 4),
                "rule_score": round_or_none(float(r["rule_score"]), 2),
                **{c: (str(r[c]) if c in frame and pd.notna(r[c]) else "(missing)") for c in SEGMENT_COLUMNS},
                "sql_within_horizon": "censored" if np.isnan(r["y_sql"]) else ("yes" if r["y_sql"] == 1 else "no"),
                "eventual_sql": "yes" if replay.ever_sql[lead] else "no",
                "eventual_opportunity": "yes" if replay.ever_opp[lead] else "no",
            }
        )
    return out


def sla_numbers(
    test_scored: pd.DataFrame, policy: StagePolicy, settings: Settings, warmup: pd.DataFrame | None = None
) -> dict[str, Any]:
    """Every number of the SLA review, as a JSON-ready dict (see the module docstring)."""
    replay = Replay(test_scored, warmup=warmup, warmup_months=settings.sla.warmup_months)
    model_t = float(policy.mql_threshold)
    rule_t = float(settings.rules.mql_threshold)
    model_new = replay.window(replay.at("p_sql", model_t))
    rule_new = replay.window(replay.at("rule_score", rule_t))
    thresholds = {
        "model": model_t,
        "rule": rule_t,
        "model_at_rule_volume": replay.volume_threshold("p_sql", len(rule_new)),
        "rule_at_model_volume": replay.volume_threshold("rule_score", len(model_new)),
    }
    # First crossings (warm-up included, for recall and for who sales already had) and the new MQLs.
    rows = {name: replay.at(POLICY_COLUMN[name], t) for name, t in thresholds.items()}
    new = {name: replay.window(r) for name, r in rows.items()}
    model_leads = set(replay.lead_code[rows["model"]].tolist())
    rule_leads = set(replay.lead_code[rows["rule"]].tolist())
    gained = np.array([r for r in new["model"] if replay.lead_code[r] not in rule_leads], dtype="int64")
    lost = np.array([r for r in new["rule"] if replay.lead_code[r] not in model_leads], dtype="int64")

    min_leads = settings.sla.report.min_segment_leads
    segs = {c: _segment_codes(replay, c, min_leads) for c in SEGMENT_COLUMNS}

    def stat(w: np.ndarray) -> dict[str, float]:
        out: dict[str, float] = {}
        for name in POLICIES:
            for key, value in replay.outcomes(rows[name], w).items():
                out[f"{name}|{key}"] = value
        for col, (codes, names) in segs.items():
            for name in ("model", "rule"):
                for key, arr in _segment_stats(replay, rows[name], w, codes, len(names)).items():
                    for j, seg_name in enumerate(names):
                        out[f"seg|{col}|{seg_name}|{name}|{key}"] = float(arr[j])
        for key, value in _switch_stats(replay, gained, lost, w).items():
            out[f"switch|{key}"] = value
        rule_rate_w = out["rule|mql_to_sql_rate"]
        out["acceptance|ratio"] = out["model_at_rule_volume|mql_to_sql_rate"] / rule_rate_w if rule_rate_w > 0 else np.nan
        return out

    point = stat(np.ones(replay.n_leads))
    cis = replay.bootstrap(stat, settings.training.bootstrap_samples, settings.training.seed)
    cells = {k: with_ci({"x": v}, {"x": cis.get(k, (np.nan, np.nan))})["x"] for k, v in point.items()}

    policies: dict[str, Any] = {}
    for name in POLICIES:
        prefix = f"{name}|"
        flat = {k.removeprefix(prefix): v for k, v in point.items() if k.startswith(prefix)}
        flat_ci = {k.removeprefix(prefix): cis.get(k, (np.nan, np.nan)) for k in point if k.startswith(prefix)}
        entry = with_ci(flat, flat_ci)
        # Shown rounded; the exact, replayable value is under "thresholds".
        entry["threshold"] = {"value": round_or_none(thresholds[name], 4), "ci_low": None, "ci_high": None}
        policies[name] = entry

    segments: dict[str, list[dict[str, Any]]] = {}
    for col, (_, names) in segs.items():
        segments[col] = [
            {
                "segment": seg_name,
                "leads": cells[f"seg|{col}|{seg_name}|model|leads"]["value"],
                **{
                    name: {
                        key: cells[f"seg|{col}|{seg_name}|{name}|{key}"]
                        for key in ("mqls", "mql_to_sql_rate", "sql_recall")
                    }
                    for name in ("model", "rule")
                },
            }
            for seg_name in names
        ]

    listed = settings.sla.report.listed_leads
    switch = {
        side: {
            **{key: cells[f"switch|{side}.{key}"] for key in ("leads", "eventual_sqls", "eventual_opps", "mql_to_sql_rate")},
            "listed": _listed(replay, rows_, column, listed),
        }
        for side, rows_, column in (("gained", gained, "p_sql"), ("lost", lost, "rule_score"))
    }

    model_rate = policies["model_at_rule_volume"]["mql_to_sql_rate"]["value"]
    rule_rate = policies["rule"]["mql_to_sql_rate"]["value"]
    ratio = round_or_none(model_rate / rule_rate, 4) if model_rate is not None and rule_rate else None
    acceptance = {
        "rule_volume": policies["rule"]["mqls"]["value"],
        "model_volume_at_rule_volume": policies["model_at_rule_volume"]["mqls"]["value"],
        "model_mql_to_sql_rate": model_rate,
        "rule_mql_to_sql_rate": rule_rate,
        "ratio": ratio,
        # Bootstrap CI of the ratio (same resampled leads for both policies in each replicate).
        "ratio_ci_low": cells["acceptance|ratio"]["ci_low"],
        "ratio_ci_high": cells["acceptance|ratio"]["ci_high"],
        "required_ratio": ACCEPTANCE_RATIO,
        "met": bool(ratio is not None and ratio >= ACCEPTANCE_RATIO),
    }

    expected_mql = policy.expected.get("mql", {})
    expected_vs_realised = {
        key: {
            "expected": (expected_mql.get(key) or {}).get("value"),
            "realised": policies["model"][key]["value"],
        }
        for key in ("mqls_per_month", "mql_to_sql_rate", "mql_to_opp_rate")
    }

    return {
        "title": "SLA review: model-set vs rule-based MQL threshold",
        "generated_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "config_hash": settings.config_hash(),
        "months": replay.months,
        "leads": replay.n_leads,
        "moments": replay.n_moments,
        "warmup": replay.warmup_note,
        "eventual_sqls": int(replay.ever_sql.sum()),
        "eventual_opportunities": int(replay.ever_opp.sum()),
        "horizons": settings.horizons.model_dump(mode="json"),
        "matured_until": replay.matured_until,
        "policy": policy.policy,
        "sql_threshold": round_or_none(policy.sql_threshold, 17),
        "notes": [*NOTES, f"Replay {replay.warmup_note}."],
        "thresholds": {k: exact_or_none(v) for k, v in thresholds.items()},  # exact: replayable
        "policy_columns": POLICY_COLUMN,
        "policies": policies,
        "acceptance": acceptance,
        "expected_vs_realised": expected_vs_realised,
        "curves": {
            "model": _curve(replay, "p_sql", [thresholds["model"], thresholds["model_at_rule_volume"]]),
            "rule": _curve(replay, "rule_score", [thresholds["rule"], thresholds["rule_at_model_volume"]]),
        },
        "calibration": {
            "sql": _calibration(replay.y_sql, replay.frame["p_sql"].to_numpy(), settings.sla.report.calibration_bins),
            "opportunity": _calibration(
                replay.y_opp, replay.frame["p_opportunity"].to_numpy(), settings.sla.report.calibration_bins
            ),
        },
        "gains": {"model": _gains(replay, "p_sql"), "rule": _gains(replay, "rule_score")},
        "funnel": {"months": replay.months, "model": _funnel(replay, new["model"]), "rule": _funnel(replay, new["rule"])},
        "segments": segments,
        "switch": switch,
    }


# --------------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------------


def build_sla_report(
    test_scored: pd.DataFrame,
    policy: StagePolicy,
    settings: Settings,
    out_html: Path,
    *,
    warmup: pd.DataFrame | None = None,
    drift: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Replay the model's and the rule's MQL thresholds on the test months; write HTML + JSON; return the JSON.

    ``test_scored`` has the columns of :func:`training.sla.fit_stage_policy`'s ``scored`` (test months).
    ``warmup``: the scored moments before them (the calibration frame), so leads that were already MQL
    before the test months are not counted again; without it the first ``sla.warmup_months`` of the
    test months play that part. ``drift`` (:func:`training.drift.drift_report`) adds the drift section.
    The JSON goes to ``out_html.with_suffix('.json')``.
    """
    data = sla_numbers(test_scored, policy, settings, warmup)
    if drift:
        data["drift"] = drift  # training.drift.drift_report: the review shows why the months may surprise
    out_html = Path(out_html)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    out_html.write_text(render_html(data), encoding="utf-8")
    out_html.with_suffix(".json").write_text(json.dumps(data, indent=2, allow_nan=False), encoding="utf-8")
    return data
