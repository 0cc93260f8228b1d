"""Reasons: contributions summed per concept, worded in plain sentences, and the fast exact TreeSHAP path."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from leadscore.config import Settings
from leadscore.features.schema import feature_schema
from leadscore.training.bundle import schema_dicts
from leadscore.training.reasons import reason_plan, top_reasons
from leadscore.training.row_path import SingleRowBooster

SCHEMA = [
    {"name": "n_demo_1d", "dtype": "float64", "template": "{value} [demo request|demo requests] in the last 24 hours",
     "concept": "demo", "unit": "count", "rank": 0, "only_for": True},
    {"name": "n_demo_30d", "dtype": "float64", "template": "{value} [demo request|demo requests] in the last 30 days",
     "concept": "demo", "unit": "count", "rank": 1, "only_for": True},
    {"name": "decay_demo", "dtype": "float64", "template": "Demo requests long ago ({value})", "concept": "demo",
     "unit": "weight", "rank": 50},
    {"name": "days_last", "dtype": "float64", "template": "Last activity {value} ago", "missing": "No activity yet",
     "concept": "recency", "unit": "days"},
    {"name": "n_unsub", "dtype": "float64", "template": "{value} unsubscribes", "concept": "unsub", "unit": "count"},
    {"name": "icp", "dtype": "str", "template": "ICP: {value}", "value_texts": {"true": "Matches the ICP"}},
    {"name": "acc_a", "dtype": "float64", "template": "{value} people", "missing": "No company known", "concept": "a",
     "unit": "count"},
    {"name": "acc_b", "dtype": "float64", "template": "{value} colleagues", "missing": "No company known",
     "concept": "b", "unit": "count"},
]


def test_concepts_sum_their_columns_and_speak_through_the_lowest_applicable_rank() -> None:
    plan = reason_plan(SCHEMA)
    row = {"n_demo_1d": 0.0, "n_demo_30d": 2.0, "decay_demo": 1.3, "days_last": 0.2, "n_unsub": 0.0, "icp": "true",
           "acc_a": np.nan, "acc_b": np.nan}
    contrib = np.array([0.1, 0.5, 0.9, -0.3, -2.0, 0.2, -0.1, -0.15])
    out = top_reasons(plan, row, contrib, k=3)
    pos = out["positive"]
    # the three demo columns are one reason, worded by the 30-day count (the 1-day count is zero)
    assert pos[0]["text"] == "2 demo requests in the last 30 days" and pos[0]["contribution"] == pytest.approx(1.5)
    assert pos[0]["concept"] == "demo" and pos[0]["feature"] == "n_demo_30d"
    assert pos[1]["text"] == "Matches the ICP"
    neg = [i["text"] for i in out["negative"]]
    # zero unsubscribes is no reason, however large its contribution; both account concepts say the same
    # sentence and count once, summed
    assert neg == ["Last activity less than a day ago", "No company known"]
    assert out["negative"][1]["contribution"] == pytest.approx(-0.25)


def test_a_buying_signal_is_never_a_reason_against() -> None:
    """Issue 12: the demo's top lead read "2 pricing page views in the last 24 hours" as a reason against (the
    high-intent concepts overlap; the attribution gave that one a negative share). A concept worded by a
    buying signal (``only_for``) with a negative sum is not worded; the other reasons and the sums are
    unchanged, and the same concept worded by a column that is not a buying signal still may be against."""
    plan = reason_plan(SCHEMA)
    row = {"n_demo_1d": 2.0, "n_demo_30d": 3.0, "decay_demo": 0.5, "days_last": 3.0, "n_unsub": 1.0, "icp": "false",
           "acc_a": 2.0, "acc_b": 1.0}
    contrib = np.array([-0.5, -0.3, -0.1, -0.2, -0.4, 0.3, 0.05, -0.01])
    out = top_reasons(plan, row, contrib, k=3)
    assert [i["text"] for i in out["negative"]] == ["1 unsubscribes", "Last activity 3 days ago", "1 colleagues"]
    assert [i["text"] for i in out["positive"]] == ["ICP: false", "2 people"]
    assert out["negative"][0]["contribution"] == -0.4  # the sums stay the concepts' exact sums
    # the same signal counted for the lead is a reason as before
    up = top_reasons(plan, row, -contrib, k=3)["positive"]
    assert up[0] == {"concept": "demo", "feature": "n_demo_1d", "value": "2", "contribution": pytest.approx(0.9),
                     "text": "2 demo requests in the last 24 hours"}
    # no recent request: the decayed count words the concept, a fading signal, and may count against
    faded = top_reasons(plan, {**row, "n_demo_1d": 0.0, "n_demo_30d": 0.0}, contrib, k=3)["negative"]
    assert faded[0]["text"] == "Demo requests long ago (0.50)" and faded[0]["feature"] == "decay_demo"


def test_the_registry_marks_recent_high_intent_activity_as_buying_signals(settings: Settings) -> None:
    from leadscore.features.schema import count_name

    schema = schema_dicts(feature_schema(settings))
    flagged = {s["name"] for s in schema if s.get("only_for")}
    windows = settings.features.windows_days
    high = [a.name for a in settings.activities if a.high_intent]
    assert "pricing_page_view" in high
    assert {count_name(a, w) for a in high for w in windows} | {f"n_high_intent_{w}d" for w in windows} <= flagged
    low = [a.name for a in settings.activities if not a.high_intent]
    assert not flagged & {count_name(a, w) for a in low for w in windows}
    assert not any(n.startswith(("decay_", "days_since")) for n in flagged)  # a fading or old signal may be against


def test_singular_and_missing_and_flat_schemas() -> None:
    plan = reason_plan(SCHEMA)
    assert plan.text(0, 1.0) == "1 demo request in the last 24 hours"
    assert plan.text(3, np.nan) == "No activity yet" and plan.text(3, 3.7) == "Last activity 3 days ago"
    flat = reason_plan([{"name": "pages", "dtype": "float64"}, {"name": "src", "dtype": "str"}])
    assert flat.concepts == ["pages", "src"]  # no concepts declared: each column is its own
    assert flat.text(0, 0.0) is None and flat.text(0, 2.0) == "pages: 2" and flat.text(1, None) == "Src not known"


def test_no_default_reason_reads_like_a_column_name(settings: Settings) -> None:
    """Every concept of the shipped schema, worded for real feature rows: plain sentences only."""
    from leadscore.features import compute
    from leadscore.features.testing import generated_history

    history = generated_history(settings, n_leads=1500, months=8, seed=11)
    acts = history.activities.sample(300, random_state=0)
    rows = compute(history, pd.DataFrame({"lead_id": acts["lead_id"].to_numpy(dtype=object),
                                          "as_of": acts["occurred_at"].to_numpy()}), settings)
    plan = reason_plan(schema_dicts(feature_schema(settings)))
    assert len(plan.concepts) < len(plan.columns) / 3  # 132 columns, a few dozen things to say
    seen = set()
    for row in rows.to_dict("records"):
        for c in range(len(plan.concepts)):
            worded = plan.concept_text(c, row)
            if worded is None:
                continue
            text = worded[1]
            seen.add(text)
            assert not any(bad in text for bad in ("_", "{", "[", "weighted", "half-life")), text
            assert not re.search(r"\b(none|nan|NaN)\b", text), text
            assert not text.startswith("0 "), text
    assert any("in the last 24 hours" in t for t in seen) and any(t.startswith("Last activity") for t in seen)


def test_single_row_predictions_and_treeshap_are_bit_identical_to_booster_predict() -> None:
    import lightgbm as lgb

    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 6))
    X[rng.random(X.shape) < 0.1] = np.nan
    y = (np.nan_to_num(X[:, 0]) + rng.normal(size=2000) > 0.5).astype(int)
    booster = lgb.train({"objective": "binary", "verbosity": -1, "num_threads": 1, "seed": 0, "num_leaves": 15},
                        lgb.Dataset(X, y), 40)
    fast = SingleRowBooster(booster.model_to_string(), 6)
    for i in range(50):
        x = X[i:i + 1]
        np.testing.assert_array_equal(fast.contrib(x), booster.predict(x, pred_contrib=True, num_threads=1)[0])
        assert fast.predict(x) == booster.predict(x, num_threads=1)[0]
