"""The SLA operations review as one self-contained HTML page, rendered from its JSON numbers only.

Same approach as the model's SLA review (:mod:`leadscore.training.report_html`, whose cells, tables,
figure layout and style it reuses): every number shown is looked up in the dict
:func:`leadscore.training.sla_ops.sla_ops_numbers` returns, tagged with its ``data-key`` path, and
plotly.js is inlined once so the page opens offline.
"""

from __future__ import annotations

import html
from typing import Any

from leadscore.training.report_html import _CSS, _cell, _figure, _table

SECTIONS = {
    "follow_up": "Speed of follow-up",
    "delay": "Acceptance by follow-up delay",
    "stages": "Conversion of every stage against the SLA's targets",
    "rejections": "Rejections and their reasons",
    "recycled": "Recycled leads and their later outcome",
    "months": "Per month",
    "owners": "Per owner",
    "teams": "Per team",
}


def _follow_up_html(d: dict[str, Any]) -> str:
    rows = [("handovers", "MQLs handed over", "num"), ("touched", "touched before they ended", "num"),
            ("median_hours", "median hours to first touch", "num"),
            ("share_within_target", f"share touched within {d['follow_up']['target_hours']} h", "pct"),
            ("target_share", "share the SLA promises", "pct"), ("meets_target", "meets the SLA", "num")]
    body = [f"<tr><th>{html.escape(label)}</th>{_cell(d, f'follow_up.{key}', kind)}</tr>" for key, label, kind in rows]
    body.append(f"<tr><th>mean attempts before a hand-back</th>{_cell(d, 'attempts.before_hand_back_mean')}</tr>")
    body.append(f"<tr><th>acceptance (MQL→SQL, matured)</th>{_cell(d, 'acceptance', 'pct', ci=True)}</tr>")
    return _table(["", "value"], body) + _months_plot(d)


def _months_plot(d: dict[str, Any]) -> str:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    months = [m["month"] for m in d["by_month"]]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Bar(x=months, y=[m["handovers"] for m in d["by_month"]], name="MQLs handed over",
                         marker_color="#9ecae1"))
    fig.add_trace(go.Scatter(x=months, y=[m["median_hours"] for m in d["by_month"]], name="median hours to touch",
                             mode="lines+markers"), secondary_y=True)
    fig.update_layout(title="Hand-overs and follow-up speed per month")
    return _figure(fig)


def _delay_html(d: dict[str, Any]) -> str:
    import plotly.graph_objects as go

    bands = d["delay_bands"]
    labels = [b["band"] for b in bands]
    val = [b["acceptance"]["value"] for b in bands]
    lo = [None if v is None else v - b["acceptance"]["ci_low"] for v, b in zip(val, bands, strict=True)]
    hi = [None if v is None else b["acceptance"]["ci_high"] - v for v, b in zip(val, bands, strict=True)]
    fig = go.Figure(go.Bar(x=labels, y=val, name="acceptance", marker_color="#3182bd",
                           error_y={"type": "data", "array": hi, "arrayminus": lo}))
    has_truth = any("truth" in b for b in bands)
    if has_truth:
        fig.add_trace(go.Scatter(x=labels, y=[b.get("truth") for b in bands], mode="markers", name="generator truth",
                                 marker={"symbol": "diamond", "size": 12, "color": "#d62728"}))
    fig.update_layout(title="MQL→SQL acceptance by hours from hand-over to first touch")
    fig.update_yaxes(title_text="acceptance", tickformat=".0%")
    body = []
    for i, b in enumerate(bands):
        truth = _cell(d, f"delay_bands.{i}.truth", "pct") if "truth" in b else "<td>n/a</td>"
        body.append(f"<tr><th>{html.escape(b['band'])}</th>{_cell(d, f'delay_bands.{i}.acceptance.n')}"
                    f"{_cell(d, f'delay_bands.{i}.acceptance', 'pct', ci=True)}{truth}</tr>")
    return _figure(fig) + _table(["first touch after", "hand-overs (matured)", "acceptance [CI]", "truth"], body)


def _stages_html(d: dict[str, Any]) -> str:
    body = [f"<tr><th>{html.escape(s['step'])}</th>{_cell(d, f'stages.{i}.rate', 'pct', ci=True)}"
            f"{_cell(d, f'stages.{i}.target', 'pct')}{_cell(d, f'stages.{i}.meets_target')}</tr>"
            for i, s in enumerate(d["stages"])]
    return _table(["step", "rate [CI]", "target", "meets"], body)


def _rejections_html(d: dict[str, Any]) -> str:
    import plotly.graph_objects as go

    reasons = d["rejections"]["by_reason"]
    fig = go.Figure(go.Bar(x=[r["count"] for r in reasons.values()], y=[r["label"] for r in reasons.values()],
                           orientation="h", marker_color="#08519c"))
    fig.update_layout(title="Rejections by reason")
    body = [f"<tr><th>{html.escape(code)}</th>{_cell(d, f'rejections.by_reason.{code}.label', 'txt')}"
            f"{_cell(d, f'rejections.by_reason.{code}.count')}{_cell(d, f'rejections.by_reason.{code}.share', 'pct')}"
            f"{_cell(d, f'rejections.by_reason.{code}.label_rule', 'txt')}</tr>" for code in reasons]
    setters = [f"<tr><th>{html.escape(s)}-set MQLs</th>{_cell(d, f'rejections.rate_by_set_by.{s}', 'pct', ci=True)}"
               f"{_cell(d, f'rejections.rate_by_set_by.{s}.n')}</tr>" for s in d["rejections"]["rate_by_set_by"]]
    return (_figure(fig) + _table(["code", "reason", "count", "share", "teaches the model"], body)
            + "<h3>Rejection rate: model-set vs rule-set MQLs</h3>" + _table(["", "rejected [CI]", "hand-overs"], setters))


def _recycled_html(d: dict[str, Any]) -> str:
    rows = [("count", "recycle events"), ("leads", "recycled leads"), ("later_mql", "MQL again later"),
            ("later_sql", "SQL later")]
    body = [f"<tr><th>{label}</th>{_cell(d, f'recycled.{k}')}</tr>" for k, label in rows]
    body.append(f"<tr><th>later SQL rate</th>{_cell(d, 'recycled.later_sql_rate', 'pct', ci=True)}</tr>")
    return _table(["", "value"], body)


def _group_html(d: dict[str, Any], key: str, name: str) -> str:
    body = []
    for i, g in enumerate(d[key]):
        body.append(f"<tr><th>{html.escape(g[name])}</th>{_cell(d, f'{key}.{i}.handovers')}"
                    f"{_cell(d, f'{key}.{i}.median_hours')}{_cell(d, f'{key}.{i}.share_within_target', 'pct')}"
                    f"{_cell(d, f'{key}.{i}.attempts_before_hand_back')}"
                    f"{_cell(d, f'{key}.{i}.acceptance', 'pct', ci=True)}{_cell(d, f'{key}.{i}.rejected')}</tr>")
    return _table([name, "handed over", "median h to touch", "within SLA", "attempts before hand-back",
                   "acceptance [CI]", "rejected"], body)


def _owners_html(d: dict[str, Any]) -> str:
    import plotly.graph_objects as go

    owners = d["by_owner"]
    fig = go.Figure(go.Scatter(x=[o["median_hours"] for o in owners],
                               y=[o["acceptance"]["value"] for o in owners], text=[o["owner"] for o in owners],
                               mode="markers+text", textposition="top center",
                               marker={"size": [max(6, (o["handovers"] or 0) ** 0.5) for o in owners]}))
    fig.update_layout(title="Owners: follow-up speed against acceptance")
    fig.update_xaxes(title_text="median hours to first touch")
    fig.update_yaxes(title_text="acceptance", tickformat=".0%")
    return _figure(fig) + _group_html(d, "by_owner", "owner")


def _teams_html(d: dict[str, Any]) -> str:
    """Each team's follow-up within the SLA and acceptance side by side, the table, and who is in it."""
    import plotly.graph_objects as go

    teams = d["by_team"]
    names = [t["team"] for t in teams]
    acc = [t["acceptance"] for t in teams]
    fig = go.Figure([
        go.Bar(x=names, y=[t["share_within_target"] for t in teams], name="touched within the SLA",
               marker_color="#9ecae1"),
        go.Bar(x=names, y=[a["value"] for a in acc], name="acceptance (MQL→SQL)", marker_color="#3182bd",
               error_y={"type": "data", "array": [None if a["value"] is None else a["ci_high"] - a["value"] for a in acc],
                        "arrayminus": [None if a["value"] is None else a["value"] - a["ci_low"] for a in acc]}),
    ])
    fig.update_layout(title="Teams: follow-up within the SLA and acceptance", barmode="group")
    fig.update_yaxes(tickformat=".0%")
    members = [f'<tr><th>{html.escape(t)}</th><td class="txt">{html.escape(", ".join(owners))}</td></tr>'
               for t, owners in d["team_members"].items()]
    return (_figure(fig) + _group_html(d, "by_team", "team") + "<h3>Members</h3>"
            + _table(["team", "owners"], members))


def render_sla_ops_html(data: dict[str, Any]) -> str:
    """The self-contained review page (plotly.js inlined once; no network needed)."""
    import plotly.offline

    renderers = {"follow_up": _follow_up_html, "delay": _delay_html, "stages": _stages_html,
                 "rejections": _rejections_html, "recycled": _recycled_html,
                 "months": lambda d: _group_html(d, "by_month", "month"), "owners": _owners_html,
                 "teams": _teams_html}
    meta = (f'<p class="meta">Source {html.escape(data["source"])}, cut-off {html.escape(data["cutoff"])}, '
            f'months {html.escape(", ".join(data["months"][:1] + data["months"][-1:]))}. '
            f"Config {html.escape(data['config_hash'])}, generated {html.escape(data['generated_at'])}.</p>")
    notes = "<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in data["notes"]) + "</ul>"
    sections = "".join(f'<section id="{k}"><h2>{html.escape(t)}</h2>{renderers[k](data)}</section>'
                       for k, t in SECTIONS.items())
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(data['title'])}</title><style>{_CSS}</style>"
            f"<script>{plotly.offline.get_plotlyjs()}</script></head><body>"
            f"<h1>{html.escape(data['title'])}</h1>{meta}{notes}{sections}</body></html>")
