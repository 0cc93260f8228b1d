"""The SLA review report as one self-contained HTML page, rendered from its JSON numbers only.

Every number on the page is looked up in the dict :func:`training.report.sla_numbers` returns (tables
carry ``data-key`` paths into it), so the HTML and the JSON cannot disagree and the test can parse
the page back and compare. plotly.js is inlined once, so the page opens offline.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

POLICY_LABELS = {
    "model": "Model (SLA threshold)",
    "rule": "Rule score (configured threshold)",
    "model_at_rule_volume": "Model at the rule's volume",
    "rule_at_model_volume": "Rule at the model's volume",
}
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
        cells = "".join(_cell(d, f"policies.{p}.{key}", kind, ci=key != "threshold") for p in d["policies"])
        body.append(f"<tr><th>{html.escape(label)}</th>{cells}</tr>")
    table = _table(["", *(POLICY_LABELS[p] for p in d["policies"])], body)
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
        f"{table}<p>Equal-volume check: {verdict} the {acc['required_ratio']}× bar.</p>{acc_table}"
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
    for p, pol in d["policies"].items():
        for col, y in ((1, "mql_to_sql_rate"), (2, "sql_recall")):
            fig.add_trace(
                go.Scatter(
                    x=[pol["mqls_per_month"]["value"]], y=[pol[y]["value"]], mode="markers", name=POLICY_LABELS[p],
                    marker={"size": 12, "symbol": symbols[p], "color": colors["model" if d["policy_columns"][p] == "p_sql" else "rule"]},
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


def _drift_html(d: dict[str, Any]) -> str:
    """Top drifting features (PSI, share outside the training range) and the label rate by month."""
    drift = d["drift"]
    body = []
    for i, f in enumerate(drift["features"][:DRIFT_SHOWN]):
        body.append(f"<tr><td>{html.escape(f['feature'])}</td>{_cell(d, f'drift.features.{i}.psi')}"
                    f"{_cell(d, f'drift.features.{i}.outside_range', 'pct')}</tr>")
    months = (f'<p class="meta">Training rows {html.escape(", ".join(drift["reference_months"][:1] + drift["reference_months"][-1:]))}'
              f' vs scoring months {html.escape(", ".join(drift["scoring_months"]))}; PSI &lt; 0.1 stable, '
              "0.1-0.25 moving, &gt; 0.25 shifted.</p>")
    rates = []
    for target, by_month in drift["label_rate"].items():
        for month in by_month:
            rates.append(f"<tr><td>{html.escape(target)}</td><td>{html.escape(month)}</td>"
                         f"{_cell(d, f'drift.label_rate.{target}.{month}.moments')}"
                         f"{_cell(d, f'drift.label_rate.{target}.{month}.rate', 'pct')}</tr>")
    return (months + _table(["feature", "PSI", "outside training range"], body)
            + _table(["target", "month", "matured moments", "label rate"], rates))


#: drifting features listed in the report (highest PSI first)
DRIFT_SHOWN = 15

SECTION_TITLES = {
    "headline": "Headline comparison (test months)",
    "tradeoff": "Precision / volume trade-off",
    "calibration": "Calibration on the test months",
    "gains": "Cumulative gains",
    "funnel": "Monthly funnel",
    "segments": "Segments",
    "switch": "Leads gained and lost by switching from the rule to the model",
    "drift": "Drift: the test months against the training rows",
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
        "drift": _drift_html,
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
        f'<section id="{s}"><h2>{html.escape(SECTION_TITLES[s])}</h2>{renderers[s](data)}</section>'
        for s in (*SECTIONS, *(["drift"] if data.get("drift") else []))
    )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(data['title'])}</title><style>{_CSS}</style>"
        f"<script>{plotly.offline.get_plotlyjs()}</script></head><body>"
        f"<h1>{html.escape(data['title'])}</h1>{meta}{notes}{sections}</body></html>"
    )
