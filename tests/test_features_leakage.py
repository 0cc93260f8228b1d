"""No leakage: rows dated after ``as_of`` never change the features or the rule score at ``as_of``.

Property-based: hypothesis builds a small CRM (a few leads sharing an account, activities, stage
changes, opportunities), picks a scoring moment, then adds and removes arbitrary rows dated after
it. Every feature and the rule score must be identical, NaN in the same places. Also: out-of-order
and duplicated activities give the features of the sorted, de-duplicated input.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from leadscore.config import Settings
from leadscore.features import compute
from leadscore.features import testing as T
from leadscore.history import CRMHistory

T0 = pd.Timestamp("2026-01-01", tz="UTC")
CUTOFF = "2026-12-31"
TYPES = ["page_view", "pricing_page_view", "email_open", "demo_request", "unsubscribe", "email_bounce",
         "meeting_booked", "Webinar_Attended", "mystery_type"]
STAGES = ["subscriber", "lead", "mql", "sql", "opportunity", "customer", "recycled", "disqualified"]
LEADS = ["L0", "L1", "L2"]

minutes = st.integers(min_value=0, max_value=200 * 24 * 60)


def _ts(m: int) -> pd.Timestamp:
    return T0 + pd.Timedelta(minutes=m)


activity = st.tuples(st.sampled_from(LEADS), minutes, st.sampled_from(TYPES))
stage_change = st.tuples(st.sampled_from(LEADS), minutes, st.sampled_from(STAGES))
opportunity = st.tuples(st.sampled_from(LEADS), minutes, st.one_of(st.none(), st.integers(0, 60 * 24 * 60)))


def _history(acts: list, stages: list, opps: list, extra_acts: Sequence = (), extra_stages: Sequence = (),
             extra_opps: Sequence = ()) -> CRMHistory:
    leads = [
        {"lead_id": "L0", "account_id": "A", "email_domain": "acme.com", "job_title": "Head of Marketing",
         "source": "webinar", "created_at": T0},
        {"lead_id": "L1", "account_id": "A", "email_domain": "gmail.com", "job_title": "Directora de Ventas",
         "created_at": T0 + pd.Timedelta(days=20)},
        {"lead_id": "L2", "email_domain": None, "job_title": "Responsabile Acquisti", "created_at": T0},
    ]
    all_acts = [*acts, *extra_acts]
    all_stages = [*stages, *extra_stages]
    all_opps = [*opps, *extra_opps]
    return T.history(
        CUTOFF,
        accounts=[{"account_id": "A", "industry": "software", "employees": 300, "annual_revenue": 3e7,
                   "country": "US", "created_at": T0}],
        leads=leads,
        activities=[{"activity_id": f"a{i}", "lead_id": lead, "occurred_at": _ts(m), "type": typ}
                    for i, (lead, m, typ) in enumerate(all_acts)],
        stage_changes=[{"lead_id": lead, "stage": stage, "changed_at": _ts(m), "set_by": "sales"}
                       for lead, m, stage in all_stages],
        opportunities=[{"opportunity_id": f"o{i}", "lead_id": lead, "account_id": "A" if lead != "L2" else None,
                        "created_at": _ts(m), "closed_at": _ts(m + d) if d is not None else None}
                       for i, (lead, m, d) in enumerate(all_opps)],
    )


def _later(items: list, as_of_min: int) -> list:
    """Shift the given rows to strictly after the moment (the 'future' that must not leak)."""
    return [(row[0], as_of_min + 1 + row[1], *row[2:]) for row in items]


@pytest.mark.parametrize("seed", [0])
@hyp_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    acts=st.lists(activity, max_size=25),
    stages=st.lists(stage_change, max_size=4),
    opps=st.lists(opportunity, max_size=2),
    future_acts=st.lists(activity, max_size=10),
    future_stages=st.lists(stage_change, max_size=3),
    future_opps=st.lists(opportunity, max_size=2),
    as_of_min=minutes,
    lead=st.sampled_from(LEADS),
)
def test_rows_after_as_of_never_change_features(settings: Settings, seed: int, acts, stages, opps, future_acts,
                                                future_stages, future_opps, as_of_min, lead) -> None:
    moment = pd.DataFrame({"lead_id": [lead], "as_of": [_ts(as_of_min)]})
    past = ([r for r in acts if r[1] <= as_of_min], [r for r in stages if r[1] <= as_of_min],
            [r for r in opps if r[1] <= as_of_min])
    # the history as given (some rows after as_of), only its past, and the past plus a different future
    full = compute(_history(acts, stages, opps), moment, settings)
    only_past = compute(_history(*past), moment, settings)
    other_future = compute(_history(*past, _later(future_acts, as_of_min), _later(future_stages, as_of_min),
                                    _later(future_opps, as_of_min)), moment, settings)
    pd.testing.assert_frame_equal(full, only_past, check_exact=True)
    pd.testing.assert_frame_equal(full, other_future, check_exact=True)


def _acts_frame(settings: Settings) -> list:
    rows = [("L0", m, t) for m, t in [(10, "page_view"), (500, "pricing_page_view"), (500, "page_view"),
                                      (3000, "demo_request"), (9000, "email_open"), (9000, "email_open"),
                                      (20000, "unsubscribe")]]
    rows += [("L1", 700, "meeting_booked"), ("L1", 8000, "pricing_page_view")]
    return rows


def test_out_of_order_and_duplicated_activities(settings: Settings) -> None:
    rows = _acts_frame(settings)
    clean = _history(rows, [("L0", 100, "lead")], [])
    shuffled = _history(rows, [("L0", 100, "lead")], [])
    acts = shuffled.activities
    # replay half of the activities (same activity_id, i.e. the CRM sent them twice) and shuffle
    dup = pd.concat([acts, acts.iloc[::2]], ignore_index=True).sample(frac=1.0, random_state=3).reset_index(drop=True)
    shuffled.activities = dup
    moments = pd.DataFrame({"lead_id": ["L0", "L0", "L1", "L0"],
                            "as_of": [_ts(500), _ts(9000), _ts(9000), _ts(30000)]})
    a = compute(clean, moments, settings)
    b = compute(shuffled, moments, settings)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert a.loc[1, "n_email_open_7d"] == 2.0  # two distinct activities at the same instant both count
    assert a.loc[0, "n_pricing_page_view_1d"] == 1.0  # activities at exactly as_of count


def test_moment_order_does_not_matter(settings: Settings) -> None:
    h = _history(_acts_frame(settings), [("L0", 100, "lead"), ("L0", 4000, "mql")], [("L1", 8500, None)])
    moments = pd.DataFrame({"lead_id": ["L0", "L1", "L0", "L2"],
                            "as_of": [_ts(9000), _ts(9000), _ts(600), _ts(100)]})
    fwd = compute(h, moments, settings)
    rev = compute(h, moments.iloc[::-1].reset_index(drop=True), settings)
    pd.testing.assert_frame_equal(fwd, rev.iloc[::-1].reset_index(drop=True), check_exact=True)


def test_many_shuffled_duplicates_take_the_large_input_path(settings: Settings) -> None:
    """Above a few hundred rows de-duplication switches to hashing; same answer as clean input."""
    import numpy as np

    rng = np.random.default_rng(0)
    rows = [(LEADS[int(rng.integers(0, 3))], int(m), TYPES[int(rng.integers(0, len(TYPES)))])
            for m in rng.integers(0, 150 * 24 * 60, 900)]
    clean = _history(rows, [("L0", 5, "lead")], [("L1", 90 * 24 * 60, None)])
    messy = _history(rows, [("L0", 5, "lead")], [("L1", 90 * 24 * 60, None)])
    acts = messy.activities
    replay = acts.sample(n=300, random_state=1)
    messy.activities = pd.concat([acts, replay], ignore_index=True).sample(frac=1.0, random_state=2).reset_index(drop=True)
    moments = pd.DataFrame({"lead_id": LEADS * 4, "as_of": [_ts(int(m)) for m in rng.integers(0, 160 * 24 * 60, 12)]})
    pd.testing.assert_frame_equal(compute(clean, moments, settings), compute(messy, moments, settings), check_exact=True)
