"""The SLA review report: every section present, every shown number equal to the JSON, offline HTML."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from leadscore.config import Settings
from leadscore.training.config import MQLPolicy
from leadscore.training.report import build_sla_report
from leadscore.training.report_html import SECTIONS, format_value
from leadscore.training.sla import fit_stage_policy
from tests.test_sla import for_synthetic, naive_first_crossings, synthetic_scored


class _Collector(HTMLParser):
    """Collects section ids, (data-key, data-kind, shown text) triples, scripts' src and links."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.cells: list[tuple[str, str, str]] = []
        self.external: list[str] = []
        self._open: list[tuple[str, str] | None] = []
        self._text: list[list[str]] = []
        self.numeric_tds_without_key = 0
        self._td_num = False
        self._td_has_key = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section" and a.get("id"):
            self.sections.append(str(a["id"]))
        for attr in ("src", "href"):
            if a.get(attr):
                self.external.append(str(a[attr]))
        if tag == "td":
            self._td_num = a.get("class") == "num"
            self._td_has_key = False
        if tag == "span":
            if a.get("data-key"):
                self._open.append((str(a["data-key"]), str(a.get("data-kind"))))
                self._text.append([])
                self._td_has_key = True
            else:
                self._open.append(None)

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._td_num and not self._td_has_key:
            self.numeric_tds_without_key += 1
        if tag == "span" and self._open:
            top = self._open.pop()
            if top is not None:
                self.cells.append((top[0], top[1], "".join(self._text.pop())))

    def handle_data(self, data: str) -> None:
        if self._text and self._open and self._open[-1] is not None:
            self._text[-1].append(data)


def _lookup(data: dict[str, Any], path: str) -> Any:
    node: Any = data
    for part in path.split("."):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


TEST_START = pd.Timestamp("2026-08-01", tz="UTC")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory, settings: Settings) -> tuple[dict[str, Any], Path]:
    full = synthetic_scored(n_leads=4000, seed=10, start="2026-04-01", months=6)
    calibration = full[full["as_of"] < TEST_START]
    test = full[full["as_of"] >= TEST_START]
    small = for_synthetic(settings, bootstrap_samples=60)
    policy = fit_stage_policy(calibration, small, override=MQLPolicy(kind="capacity", capacity_per_month=200))
    out = tmp_path_factory.mktemp("sla") / "review" / "sla-review.html"
    data = build_sla_report(test, policy, small, out, warmup=calibration)
    data["_full"] = full
    return data, out


def test_writes_html_and_identical_json(report: tuple[dict[str, Any], Path]) -> None:
    data, out = report
    on_disk = json.loads(out.with_suffix(".json").read_text())
    assert on_disk == {k: v for k, v in data.items() if k != "_full"}


def test_every_section_is_present(report: tuple[dict[str, Any], Path]) -> None:
    _, out = report
    parser = _Collector()
    parser.feed(out.read_text())
    assert parser.sections == list(SECTIONS)
    text = out.read_text()
    assert text.count("plotly-graph-div") >= 4  # trade-off, calibration, gains, funnel


def test_every_shown_number_equals_the_json(report: tuple[dict[str, Any], Path]) -> None:
    data, out = report
    parser = _Collector()
    parser.feed(out.read_text())
    assert len(parser.cells) > 300
    assert parser.numeric_tds_without_key == 0  # no number is shown that is not tied to the JSON
    for key, kind, shown in parser.cells:
        value = _lookup(data, key)
        assert shown == format_value(value, kind), key
        if value is None:
            continue
        if kind == "pct":
            assert float(shown.rstrip("%")) / 100 == pytest.approx(value, abs=1e-12), key
        elif kind == "num" and not isinstance(value, bool):
            assert float(shown) == value, key
    shown_keys = {k for k, _, _ in parser.cells}
    for policy in ("model", "rule", "model_at_rule_volume", "rule_at_model_volume"):
        for stat in ("mqls_per_month", "mql_to_sql_rate", "sql_recall", "opp_recall", "median_days_to_mql"):
            assert f"policies.{policy}.{stat}.value" in shown_keys
            assert f"policies.{policy}.{stat}.ci_low" in shown_keys


def test_html_opens_offline(report: tuple[dict[str, Any], Path]) -> None:
    _, out = report
    parser = _Collector()
    text = out.read_text()
    parser.feed(text)
    assert parser.external == []  # no <script src>, no stylesheet links, no CDN
    assert not re.search(r"<script[^>]+src=", text)
    assert "Plotly.newPlot" in text and len(text) > 3_000_000  # plotly.js is inlined


def test_replay_numbers_are_consistent(report: tuple[dict[str, Any], Path], settings: Settings) -> None:
    data, _ = report
    full = data["_full"]
    pol = data["policies"]
    assert data["months"] == ["2026-08", "2026-09"]
    model_first = naive_first_crossings(full, "p_sql", data["thresholds"]["model"], TEST_START)
    rule_first = naive_first_crossings(full, "rule_score", data["thresholds"]["rule"], TEST_START)
    assert pol["model"]["mqls"]["value"] == len(model_first) == sum(data["funnel"]["model"]["mqls"])
    assert pol["rule"]["mqls"]["value"] == len(rule_first) == sum(data["funnel"]["rule"]["mqls"])
    assert pol["model"]["mql_to_sql_rate"]["value"] == pytest.approx(model_first["y_sql"].dropna().mean(), abs=1e-4)
    assert pol["rule"]["mql_to_sql_rate"]["value"] == pytest.approx(rule_first["y_sql"].dropna().mean(), abs=1e-4)
    # Equal volume both ways, as close as the scores allow: with a warm-up, a lower bar also moves leads'
    # first crossings into the warm-up, so not every volume is reachable.
    for name, column, target in (
        ("model_at_rule_volume", "p_sql", pol["rule"]["mqls"]["value"]),
        ("rule_at_model_volume", "rule_score", pol["model"]["mqls"]["value"]),
    ):
        got = len(naive_first_crossings(full, column, data["thresholds"][name], TEST_START))
        assert pol[name]["mqls"]["value"] == got
        for t in np.quantile(full[column], np.linspace(0.0, 0.999, 60)):
            assert abs(got - target) <= abs(len(naive_first_crossings(full, column, t, TEST_START)) - target)
    assert pol["rule_at_model_volume"]["mqls"]["value"] == pol["model"]["mqls"]["value"]
    # Switching: new MQLs of one policy that the other never flagged (not even before the test months).
    model_ever = set(naive_first_crossings(full, "p_sql", data["thresholds"]["model"])["lead_id"])
    rule_ever = set(naive_first_crossings(full, "rule_score", data["thresholds"]["rule"])["lead_id"])
    gained = set(model_first["lead_id"]) - rule_ever
    lost = set(rule_first["lead_id"]) - model_ever
    assert data["switch"]["gained"]["leads"]["value"] == len(gained)
    assert data["switch"]["lost"]["leads"]["value"] == len(lost)
    assert {r["lead_id"] for r in data["switch"]["gained"]["listed"]} <= gained
    assert {r["lead_id"] for r in data["switch"]["lost"]["listed"]} <= lost
    # Segments add up to the whole.
    for rows in data["segments"].values():
        assert sum(r["model"]["mqls"]["value"] for r in rows) == pol["model"]["mqls"]["value"]
        assert sum(r["leads"] for r in rows) == data["leads"]
    assert any("warm-up" in n for n in data["notes"])
    # CIs bracket their point estimates.
    for name in pol:
        for stat in ("mql_to_sql_rate", "sql_recall", "mqls_per_month"):
            cell = pol[name][stat]
            assert cell["ci_low"] <= cell["value"] <= cell["ci_high"], (name, stat)


def test_acceptance_figures_are_the_equal_volume_comparison(report: tuple[dict[str, Any], Path]) -> None:
    data, _ = report
    acc, pol = data["acceptance"], data["policies"]
    assert acc["model_mql_to_sql_rate"] == pol["model_at_rule_volume"]["mql_to_sql_rate"]["value"]
    assert acc["rule_mql_to_sql_rate"] == pol["rule"]["mql_to_sql_rate"]["value"]
    assert acc["ratio"] == pytest.approx(acc["model_mql_to_sql_rate"] / acc["rule_mql_to_sql_rate"], abs=1e-3)
    assert acc["met"] == (acc["ratio"] >= acc["required_ratio"])
    assert acc["ratio_ci_low"] <= acc["ratio"] <= acc["ratio_ci_high"]
    assert data["notes"] and any("censored" in n for n in data["notes"])
