"""Labels with known answers, training moments, the fit rules, and the rule score."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from leadscore.config import Settings, load_settings
from leadscore.features import compute
from leadscore.features import testing as T
from leadscore.features.engine import FeatureInputError
from leadscore.features.fit import fit_row, fit_rules, title_to_roles
from leadscore.features.labels import make_labels
from leadscore.features.moments import WEIGHT_COLUMN, moment_sample, moment_weights, training_moments
from leadscore.features.rules import rule_is_mql

T0 = pd.Timestamp("2026-01-01", tz="UTC")
CUTOFF = T0 + pd.Timedelta(days=200)


def day(d: float) -> pd.Timestamp:
    return T0 + pd.Timedelta(days=d)


def _lead(i: str, **kw: object) -> dict[str, object]:
    return {"lead_id": i, "created_at": T0, **kw}


def _labels(settings: Settings, stage_changes: list, opportunities: list, moments: list) -> pd.DataFrame:
    leads = sorted({m[0] for m in moments} | {s["lead_id"] for s in stage_changes}
                   | {o["lead_id"] for o in opportunities})
    h = T.history(CUTOFF, leads=[_lead(i) for i in leads], stage_changes=stage_changes, opportunities=opportunities)
    return make_labels(h, pd.DataFrame(moments, columns=["lead_id", "as_of"]), settings)


def sc(lead: str, d: float, stage: str) -> dict[str, object]:
    return {"lead_id": lead, "changed_at": day(d), "stage": stage, "set_by": "sales"}


def test_sql_at_day_29_is_positive_day_31_is_negative(settings: Settings) -> None:
    y = _labels(settings, [sc("A", 29, "sql"), sc("B", 31, "sql"), sc("C", 30, "sql")],
                [], [("A", day(0)), ("B", day(0)), ("C", day(0))])
    assert y["y_sql"].tolist() == [1.0, 0.0, 1.0]  # the window is (as_of, as_of + 30 days]
    assert y["y_sql"].dtype == np.float64


def test_stage_change_at_exactly_as_of_is_not_a_future_conversion(settings: Settings) -> None:
    y = _labels(settings, [sc("A", 10, "sql")], [], [("A", day(10))])
    assert y["y_sql"].tolist() == [0.0]


def test_censored_at_the_cutoff_unless_converted(settings: Settings) -> None:
    y = _labels(settings, [sc("B", 195, "customer")], [],
                [("A", CUTOFF - pd.Timedelta(days=10)), ("B", CUTOFF - pd.Timedelta(days=10)),
                 ("A", CUTOFF - pd.Timedelta(days=30))])
    assert math.isnan(y.loc[0, "y_sql"])  # window runs past the cut-off, no conversion yet: unknown
    assert y.loc[1, "y_sql"] == 1.0  # converted before the cut-off: known positive
    assert y.loc[2, "y_sql"] == 0.0  # window ends exactly at the cut-off: fully observed
    assert math.isnan(y.loc[2, "y_opp"])  # but the 90-day opportunity window is not


def test_recycled_then_sql(settings: Settings) -> None:
    stages = [sc("A", 1, "lead"), sc("A", 5, "mql"), sc("A", 20, "recycled"), sc("A", 60, "sql")]
    y = _labels(settings, stages, [], [("A", day(6)), ("A", day(40)), ("A", day(25))])
    assert y["y_sql"].tolist() == [0.0, 1.0, 0.0]
    h = T.history(CUTOFF, leads=[_lead("A")], stage_changes=stages,
                  activities=[{"activity_id": "x", "lead_id": "A", "occurred_at": day(40), "type": "page_view"}])
    f = compute(h, pd.DataFrame({"lead_id": ["A"], "as_of": [day(40)]}), settings)
    assert f.loc[0, "current_stage"] == "recycled" and f.loc[0, "times_recycled"] == 1.0
    assert f.loc[0, "days_in_stage"] == 20.0


def test_opportunity_without_sql_stage(settings: Settings) -> None:
    opp = {"opportunity_id": "O", "lead_id": "A", "created_at": day(50), "amount": 1000.0}
    y = _labels(settings, [sc("A", 1, "mql")], [opp], [("A", day(10)), ("A", day(40)), ("A", day(55))])
    # an opportunity means sales accepted the lead even if the CRM skipped the SQL stage
    assert y["y_sql"].tolist() == [0.0, 1.0, 0.0]
    assert y["y_opp"].tolist() == [1.0, 1.0, 0.0]


def test_bad_moment_input_is_named(settings: Settings) -> None:
    h = T.history(CUTOFF, leads=[_lead("A")])
    with pytest.raises(FeatureInputError, match=r"moments\.lead_id.*ZZZ"):
        make_labels(h, pd.DataFrame({"lead_id": ["ZZZ"], "as_of": [day(1)]}), settings)
    with pytest.raises(FeatureInputError, match=r"moments\.as_of"):
        make_labels(h, pd.DataFrame({"lead_id": ["A"], "as_of": [pd.NaT]}), settings)


def test_training_moments_sampling(settings: Settings) -> None:
    acts = [{"activity_id": f"a{i}", "lead_id": "A", "occurred_at": day(i * 0.5), "type": "page_view"}
            for i in range(120)]
    acts += [{"activity_id": f"b{i}", "lead_id": "B", "occurred_at": day(i), "type": "email_open"} for i in range(40)]
    acts += [{"activity_id": "c", "lead_id": "C", "occurred_at": day(3), "type": "email_open"},
             {"activity_id": "c2", "lead_id": "C", "occurred_at": day(3), "type": "page_view"}]
    h = T.history(CUTOFF, leads=[_lead("A"), _lead("B"), _lead("C")], activities=acts,
                  stage_changes=[sc("B", 20.5, "sql")])
    m = training_moments(h, settings)
    per = m.groupby("lead_id")["as_of"]
    assert per.size().to_dict() == {"A": 12, "B": 12, "C": 1}  # cap; same instant is one call
    a = m.loc[m["lead_id"] == "A", "as_of"]
    assert (a.diff().dropna() >= pd.Timedelta(hours=24)).all()  # min gap
    assert a.min() < day(10) and a.max() > day(50)  # spread over the lead's history
    assert (m.loc[m["lead_id"] == "B", "as_of"] < day(20.5)).all()  # only while not yet SQL
    assert m.equals(training_moments(h, settings))  # seeded: same input, same moments
    other = load_settings(overrides=["moments.seed=7"])
    assert not m.equals(training_moments(h, other))
    # partitionable by lead: sampling one lead alone gives its moments in the full run
    alone = T.history(CUTOFF, leads=[_lead("A")], activities=[r for r in acts if r["lead_id"] == "A"])
    pd.testing.assert_frame_equal(training_moments(alone, settings), m[m["lead_id"] == "A"].reset_index(drop=True))
    # Horvitz-Thompson weights: each kept moment stands for its stratum, so per lead they sum to the
    # eligible moments (A: 60 a day apart of 120 half-days; B: days 0..20 before its SQL; C: one)
    from leadscore.features.engine import prepare

    _, _, weight = moment_sample(h, settings, prepare(h, settings))
    w = pd.Series(weight).groupby(m["lead_id"].to_numpy())
    assert w.sum().to_dict() == {"A": 60.0, "B": 21.0, "C": 1.0}
    assert set(weight[(m["lead_id"] == "A").to_numpy()]) == {5.0}  # 60 in 12 equal strata
    assert set(weight[(m["lead_id"] == "B").to_numpy()]) == {1.0, 2.0}  # 21 in strata of 1-2


def test_moment_weights_keep_each_months_share() -> None:
    """Scaled to mean 1 within each calendar month: within a month the weights' ratios stay (they undo
    the cap's selection there), across months each month keeps its rows' share; no column: all 1."""
    as_of = pd.Series(pd.to_datetime(["2026-01-03", "2026-01-20", "2026-01-25", "2026-02-02", "2026-02-10"], utc=True))
    frame = pd.DataFrame({"as_of": as_of, WEIGHT_COLUMN: [1.0, 2.0, 3.0, 6.0, 2.0]})
    w = moment_weights(frame)
    np.testing.assert_allclose(w, [0.5, 1.0, 1.5, 1.5, 0.5])
    np.testing.assert_allclose(moment_weights(frame[["as_of"]]), np.ones(5))


def test_multilingual_titles(settings: Settings) -> None:
    r = fit_rules(settings)
    assert title_to_roles("Head of Marketing", r) == ("head", "marketing")
    assert title_to_roles("Responsabile Acquisti", r) == ("head", "procurement")
    assert title_to_roles("Directora de Ventas", r) == ("director", "sales")
    assert title_to_roles("Geschäftsführerin", r)[0] == "c_level"
    assert title_to_roles("Vice President Vertrieb", r) == ("vp", "sales")
    assert title_to_roles("Stagiaire Ingénierie", r) == ("intern", "engineering")
    sen, dep = title_to_roles(None, r)
    assert math.isnan(sen) and math.isnan(dep)  # type: ignore[arg-type]


def test_fit_row(settings: Settings) -> None:
    r = fit_rules(settings)
    row = dict(zip(
        ["source", "industry", "employee_band", "revenue_band", "country", "icp_match", "seniority", "department",
         "email_domain_type", "employees", "annual_revenue"],
        fit_row("Paid Search", "Sales Analyst", "VP", None, "jane@GMAIL.com", None, "Software", 120, 2e7, "de", r),
        strict=True))
    assert row["source"] == "paid_search" and row["industry"] == "software"
    assert row["employee_band"] == "50-249" and row["revenue_band"] == "10M-50M"
    assert row["country"] == "DE" and row["icp_match"] == "true"
    assert row["seniority"] == "vp"  # the CRM field wins when it is a known value
    assert row["department"] == "sales" and row["email_domain_type"] == "free_mail"
    unknown = fit_row(None, None, None, None, None, None, None, None, None, None, r)
    assert unknown[5] == "false" and unknown[8] == "unknown" and all(
        isinstance(v, float) and math.isnan(v) for i, v in enumerate(unknown) if i not in (5, 8))


def test_rule_score_points_decay_and_attributes(settings: Settings) -> None:
    acts = [{"activity_id": "d", "lead_id": "A", "occurred_at": day(0), "type": "demo_request"},
            {"activity_id": "p", "lead_id": "A", "occurred_at": day(30), "type": "pricing_page_view"},
            {"activity_id": "old", "lead_id": "A", "occurred_at": day(-100), "type": "demo_request"}]
    h = T.history(CUTOFF, leads=[_lead("A", job_title="CEO", email_domain="gmail.com")], activities=acts)
    f = compute(h, pd.DataFrame({"lead_id": ["A"], "as_of": [day(30)]}), settings)
    # demo 30 points halved after 30 days, pricing 10 now, the 130-day-old demo is outside the 90-day
    # window; CEO (c_level) +15, free mail -10
    assert f.loc[0, "rule_score"] == pytest.approx(15.0 + 10.0 + 15.0 - 10.0)
    assert rule_is_mql(f.loc[0, "rule_score"], settings) is False
    assert rule_is_mql(np.array([10.0, 1e4]), settings).tolist() == [False, True]
