"""The SLA review report: the model's MQL threshold against the rule-based score's, on the test months.

SLA reviewers decide, each month or quarter, where the MQL hand-off should sit. They need to see, on
months neither threshold was fitted on, what each policy would have handed to sales (volume), how much
of it converted (MQL->SQL, MQL->opportunity), what it missed (recall of the eventual SQLs and
opportunities), how early it flagged leads, who changes hands if they switch, and whether the picture
holds per source, industry and company size. Volume and quality trade off, so the two policies are
also compared at equal volume (the rule threshold that hands over as many MQLs as the model and the
model threshold that hands over as many as the rule).

One JSON dict holds every number; the HTML is rendered from it only (tables carry ``data-key`` paths
into the JSON) so the two cannot disagree. The HTML inlines plotly.js and opens offline.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from leadscore.training.sla import SEGMENT_COLUMNS, Replay, StagePolicy, _round, with_ci

if TYPE_CHECKING:
    from leadscore.config import Settings

POLICIES = ("model", "rule", "model_at_rule_volume", "rule_at_model_volume")
POLICY_LABELS = {
    "model": "Model (SLA threshold)",
    "rule": "Rule score (configured threshold)",
    "model_at_rule_volume": "Model at the rule's volume",
    "rule_at_model_volume": "Rule at the model's volume",
}
POLICY_COLUMN = {"model": "p_sql", "rule": "rule_score", "model_at_rule_volume": "p_sql", "rule_at_model_volume": "rule_score"}
HEADLINE_STATS: tuple[tuple[str, str, str], ...] = (
    ("threshold", "threshold", "num"),
    ("mqls", "MQLs (test months)", "num"),
    ("mqls_per_month", "MQLs per month", "num"),
    ("mql_to_sql_rate", "MQL→SQL rate", "pct"),
    ("mql_to_opp_rate", "MQL→opportunity rate", "pct"),
    ("sql_recall", "recall of eventual SQLs", "pct"),
    ("opp_recall", "recall of eventual opportunities", "pct"),
    ("median_days_to_mql", "median days from creation to MQL", "num"),
    ("labelled_sql", "MQLs with a matured SQL label (rate denominator)", "num"),
    ("labelled_opp", "MQLs with a matured opportunity label (rate denominator)", "num"),
)
SECTIONS = ("headline", "tradeoff", "calibration", "gains", "funnel", "segments", "switch")
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
        "predicted": [_round(float(p[g].mean()), 4) for g in groups],
        "observed": [_round(float(y[g].mean()), 4) for g in groups],
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
        "share_of_leads": [_round(i / replay.n_leads, 4) for i in idx],
        "share_of_sqls": [_round(f / total, 4) for f in found],
    }


def _curve(replay: Replay, column: str, extra: list[float]) -> dict[str, list[float | None]]:
    rec = replay.records(column)
    grid = np.unique(np.concatenate([np.quantile(rec.value, np.linspace(0, 1, 120)), extra]))
    curves = replay.curves(column, grid)
    keys = ("threshold", "mqls_per_month", "mql_to_sql_rate", "sql_recall")
    return {k: [_round(float(v), 4) for v in curves[k]] for k in keys}


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
                "p_sql": _round(float(r["p_sql"]), 4),
                "rule_score": _round(float(r["rule_score"]), 2),
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
        entry["threshold"] = {"value": _round(thresholds[name], 4), "ci_low": None, "ci_high": None}
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
    ratio = _round(model_rate / rule_rate, 4) if model_rate is not None and rule_rate else None
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
        "sql_threshold": _round(policy.sql_threshold, 17),
        "notes": [*NOTES, f"Replay {replay.warmup_note}."],
        "thresholds": {k: _round(v, 17) for k, v in thresholds.items()},  # exact: replayable
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


def format_value(value: Any, kind: str) -> str:
    """How a JSON value is shown in the HTML; the test parses it back and compares with the JSON."""
    if value is None:
        return "n/a"
    if kind == "pct":
        return f"{round(float(value) * 100, 2):.2f}%"
    if kind == "num":
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, int) or (isinstance(value, float) and float(value).is_integer()):
            return str(int(value))
        return repr(float(value))
    return str(value)


def _cell(data: dict[str, Any], path: str, kind: str = "num", ci: bool = False) -> str:
    """A ``<td>`` showing the JSON value at ``path`` (with its CI when asked), tagged with the path."""
    node: Any = data
    for part in path.split("."):
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, dict):
        text = f'<span data-key="{path}.value" data-kind="{kind}">{html.escape(format_value(node["value"], kind))}</span>'
        if ci and node.get("ci_low") is not None:
            text += (
                f' <span class="ci">[<span data-key="{path}.ci_low" data-kind="{kind}">'
                f"{html.escape(format_value(node['ci_low'], kind))}</span>, "
                f'<span data-key="{path}.ci_high" data-kind="{kind}">'
                f"{html.escape(format_value(node['ci_high'], kind))}</span>]</span>"
            )
        return f'<td class="num">{text}</td>'
    cls = "num" if kind in ("num", "pct") else "txt"
    return f'<td class="{cls}"><span data-key="{path}" data-kind="{kind}">{html.escape(format_value(node, kind))}</span></td>'


def _table(head: list[str], body: list[str]) -> str:
    ths = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    return f"<table><thead><tr>{ths}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _figure(fig: Any) -> str:
    fig.update_layout(template="none", margin={"l": 60, "r": 20, "t": 40, "b": 50}, height=420)
    return str(fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False}))


def _headline_html(d: dict[str, Any]) -> str:
    body = []
    for key, label, kind in HEADLINE_STATS:
        cells = "".join(_cell(d, f"policies.{p}.{key}", kind, ci=key != "threshold") for p in POLICIES)
        body.append(f"<tr><th>{html.escape(label)}</th>{cells}</tr>")
    table = _table(["", *(POLICY_LABELS[p] for p in POLICIES)], body)
    acc = d["acceptance"]
    verdict = "meets" if acc["met"] else "does NOT meet"
    acc_row = (
        "<tr><th>at the rule's volume: model MQL→SQL rate ÷ rule MQL→SQL rate</th>"
        f"{_cell(d, 'acceptance.model_mql_to_sql_rate', 'pct')}{_cell(d, 'acceptance.rule_mql_to_sql_rate', 'pct')}"
        f"{_cell(d, 'acceptance.ratio', 'num')}{_cell(d, 'acceptance.ratio_ci_low', 'num')}"
        f"{_cell(d, 'acceptance.ratio_ci_high', 'num')}{_cell(d, 'acceptance.required_ratio', 'num')}</tr>"
    )
    acc_table = _table(["", "model", "rule", "ratio", "ratio 95% CI low", "ratio 95% CI high", "required"], [acc_row])
    exp_rows = [
        f"<tr><th>{html.escape(label)}</th>{_cell(d, f'expected_vs_realised.{key}.expected', kind)}"
        f"{_cell(d, f'expected_vs_realised.{key}.realised', kind)}</tr>"
        for key, label, kind in (
            ("mqls_per_month", "MQLs per month", "num"),
            ("mql_to_sql_rate", "MQL→SQL rate", "pct"),
            ("mql_to_opp_rate", "MQL→opportunity rate", "pct"),
        )
    ]
    exp_table = _table(["model policy", "expected (fit months)", "realised (test months)"], exp_rows)
    return (
        f"{table}<p>Equal-volume check: {verdict} the {ACCEPTANCE_RATIO}× bar.</p>{acc_table}"
        f"<h3>The model policy's promise vs what happened</h3>{exp_table}"
    )


def _tradeoff_html(d: dict[str, Any]) -> str:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("MQL→SQL rate vs volume", "recall of eventual SQLs vs volume"))
    colors = {"model": "#1f77b4", "rule": "#d62728"}
    for name, curve in d["curves"].items():
        for col, y in ((1, "mql_to_sql_rate"), (2, "sql_recall")):
            fig.add_trace(
                go.Scatter(
                    x=curve["mqls_per_month"], y=curve[y], mode="lines", name=f"{name} (all thresholds)",
                    line={"color": colors[name]}, showlegend=col == 1, customdata=curve["threshold"],
                    hovertemplate="threshold %{customdata}<br>%{x} MQLs/month<br>%{y:.3f}<extra></extra>",
                ),
                row=1, col=col,
            )
    symbols = {"model": "circle", "rule": "square", "model_at_rule_volume": "diamond", "rule_at_model_volume": "x"}
    for p in POLICIES:
        pol = d["policies"][p]
        for col, y in ((1, "mql_to_sql_rate"), (2, "sql_recall")):
            fig.add_trace(
                go.Scatter(
                    x=[pol["mqls_per_month"]["value"]], y=[pol[y]["value"]], mode="markers", name=POLICY_LABELS[p],
                    marker={"size": 12, "symbol": symbols[p], "color": colors["model" if POLICY_COLUMN[p] == "p_sql" else "rule"]},
                    showlegend=col == 1,
                ),
                row=1, col=col,
            )
    fig.update_xaxes(title_text="MQLs per month")
    return _figure(fig)


def _calibration_html(d: dict[str, Any]) -> str:
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect", line={"dash": "dot", "color": "grey"}))
    for name, cal in d["calibration"].items():
        fig.add_trace(
            go.Scatter(x=cal["predicted"], y=cal["observed"], mode="lines+markers", name=f"P({name})", customdata=cal["moments"],
                       hovertemplate="predicted %{x:.3f}<br>observed %{y:.3f}<br>%{customdata} moments<extra></extra>")
        )
    fig.update_xaxes(title_text="mean calibrated probability (equal-count bins)")
    fig.update_yaxes(title_text="observed rate (labelled test moments)")
    return _figure(fig)


def _gains_html(d: dict[str, Any]) -> str:
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="random", line={"dash": "dot", "color": "grey"}))
    for name, g in d["gains"].items():
        fig.add_trace(go.Scatter(x=g["share_of_leads"], y=g["share_of_sqls"], mode="lines", name=name))
    fig.update_xaxes(title_text="share of leads, highest score first")
    fig.update_yaxes(title_text="share of eventual SQLs")
    return _figure(fig)


def _funnel_html(d: dict[str, Any]) -> str:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    months = d["funnel"]["months"]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("model", "rule"), shared_yaxes=True)
    stages = ("mqls", "sql_within_horizon", "opportunity_within_horizon")
    colors = dict(zip(stages, ("#9ecae1", "#3182bd", "#08519c"), strict=True))
    for col, name in ((1, "model"), (2, "rule")):
        for stage in stages:
            fig.add_trace(
                go.Bar(x=months, y=d["funnel"][name][stage], name=stage, marker_color=colors[stage], showlegend=col == 1),
                row=1, col=col,
            )
    fig.update_layout(barmode="group")
    body = []
    for name in ("model", "rule"):
        for stage in d["funnel"][name]:
            cells = "".join(_cell(d, f"funnel.{name}.{stage}.{i}") for i in range(len(months)))
            body.append(f"<tr><th>{name}</th><th>{stage}</th>{cells}</tr>")
    return _figure(fig) + _table(["policy", "stage", *months], body)


def _segments_html(d: dict[str, Any]) -> str:
    parts = []
    head = ["segment", "leads", "model MQLs", "model MQL→SQL", "model SQL recall", "rule MQLs", "rule MQL→SQL", "rule SQL recall"]
    for col, rows in d["segments"].items():
        body = []
        for i, _ in enumerate(rows):
            base = f"segments.{col}.{i}"
            cells = _cell(d, f"{base}.segment", "txt") + _cell(d, f"{base}.leads")
            for name in ("model", "rule"):
                cells += _cell(d, f"{base}.{name}.mqls")
                cells += _cell(d, f"{base}.{name}.mql_to_sql_rate", "pct", ci=True)
                cells += _cell(d, f"{base}.{name}.sql_recall", "pct", ci=True)
            body.append(f"<tr>{cells}</tr>")
        parts.append(f"<h3>by {html.escape(col)}</h3>{_table(head, body)}")
    return "".join(parts)


def _switch_html(d: dict[str, Any]) -> str:
    summary = []
    for side, label in (("gained", "gained (model MQL, not rule)"), ("lost", "lost (rule MQL, not model)")):
        cells = "".join(
            _cell(d, f"switch.{side}.{k}", kind, ci=True)
            for k, kind in (("leads", "num"), ("eventual_sqls", "num"), ("eventual_opps", "num"), ("mql_to_sql_rate", "pct"))
        )
        summary.append(f"<tr><th>{label}</th>{cells}</tr>")
    out = _table(["", "leads", "became SQL", "became opportunity", "MQL→SQL rate at MQL moment"], summary)
    for side in ("gained", "lost"):
        listed = d["switch"][side]["listed"]
        if not listed:
            out += f"<h3>{side}: none</h3>"
            continue
        keys = list(listed[0])
        body = []
        for i in range(len(listed)):
            kinds = {"p_sql": "num", "rule_score": "num"}
            body.append("<tr>" + "".join(_cell(d, f"switch.{side}.listed.{i}.{k}", kinds.get(k, "txt")) for k in keys) + "</tr>")
        out += f"<h3>{side}: the {len(listed)} highest-scored of them</h3>" + _table(keys, body)
    return out


SECTION_TITLES = {
    "headline": "Headline comparison (test months)",
    "tradeoff": "Precision / volume trade-off",
    "calibration": "Calibration on the test months",
    "gains": "Cumulative gains",
    "funnel": "Monthly funnel",
    "segments": "Segments",
    "switch": "Leads gained and lost by switching from the rule to the model",
}

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.5rem 0 1.5rem;font-size:.9rem}
th,td{border:1px solid #ddd;padding:.3rem .6rem;text-align:left}
td.num{text-align:right;white-space:nowrap}.ci{color:#777;font-size:.8rem}
thead th{background:#f4f4f4}h2{border-bottom:2px solid #1f77b4;padding-bottom:.2rem;margin-top:2.5rem}
.meta{color:#555}
"""


def render_html(data: dict[str, Any]) -> str:
    """The self-contained report page (plotly.js inlined once in the head; no network needed)."""
    import plotly.offline

    renderers: dict[str, Callable[[dict[str, Any]], str]] = {
        "headline": _headline_html,
        "tradeoff": _tradeoff_html,
        "calibration": _calibration_html,
        "gains": _gains_html,
        "funnel": _funnel_html,
        "segments": _segments_html,
        "switch": _switch_html,
    }
    meta = (
        f'<p class="meta">Test months {html.escape(", ".join(data["months"]))}; '
        f'<span data-key="leads" data-kind="num">{data["leads"]}</span> leads, '
        f'<span data-key="moments" data-kind="num">{data["moments"]}</span> scoring moments, '
        f'<span data-key="eventual_sqls" data-kind="num">{data["eventual_sqls"]}</span> eventual SQLs. '
        f"MQL policy: {html.escape(str(data['policy'].get('mql', {}).get('kind', '?')))} "
        f"({html.escape(str(data['policy'].get('mql', {}).get('note', '')))}). "
        f"Config {html.escape(data['config_hash'])}, generated {html.escape(data['generated_at'])}.</p>"
    )
    notes = "<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in data["notes"]) + "</ul>"
    sections = "".join(
        f'<section id="{s}"><h2>{html.escape(SECTION_TITLES[s])}</h2>{renderers[s](data)}</section>' for s in SECTIONS
    )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(data['title'])}</title><style>{_CSS}</style>"
        f"<script>{plotly.offline.get_plotlyjs()}</script></head><body>"
        f"<h1>{html.escape(data['title'])}</h1>{meta}{notes}{sections}</body></html>"
    )


def build_sla_report(
    test_scored: pd.DataFrame,
    policy: StagePolicy,
    settings: Settings,
    out_html: Path,
    *,
    warmup: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Replay the model's and the rule's MQL thresholds on the test months; write HTML + JSON; return the JSON.

    ``test_scored`` has the columns of :func:`training.sla.fit_stage_policy`'s ``scored`` (test months).
    ``warmup``: the scored moments before them (the calibration frame), so leads that were already MQL
    before the test months are not counted again; without it the first ``sla.warmup_months`` of the
    test months play that part. The JSON goes to ``out_html.with_suffix('.json')``.
    """
    data = sla_numbers(test_scored, policy, settings, warmup)
    out_html = Path(out_html)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    out_html.write_text(render_html(data), encoding="utf-8")
    out_html.with_suffix(".json").write_text(json.dumps(data, indent=2, allow_nan=False), encoding="utf-8")
    return data
