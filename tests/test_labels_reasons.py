"""A rejection with a reason is a label event: negative reasons answer censored moments, "not now" does not."""

from __future__ import annotations

import numpy as np
import pandas as pd

from leadscore.config import Settings
from leadscore.features.labels import make_labels
from leadscore.features.testing import history


def _crm(reason: str | None, converts: bool = False) -> object:
    stages = [{"lead_id": "L1", "stage": "mql", "changed_at": "2026-05-20", "set_by": "rule"},
              {"lead_id": "L1", "stage": "disqualified" if reason and reason.startswith("disq") else "recycled",
               "changed_at": "2026-05-25", "set_by": "sales", "reason": reason}]
    if converts:
        stages.append({"lead_id": "L1", "stage": "sql", "changed_at": "2026-05-28", "set_by": "sales"})
    return history(
        "2026-06-01",
        leads=[{"lead_id": "L1", "created_at": "2026-05-01"}, {"lead_id": "L2", "created_at": "2026-05-01"}],
        activities=[{"activity_id": f"a{i}", "lead_id": lead, "occurred_at": "2026-05-15", "type": "page_view"}
                    for i, lead in enumerate(("L1", "L2"))],
        stage_changes=stages,
    )


MOMENTS = pd.DataFrame({"lead_id": ["L1", "L1", "L2"],
                        "as_of": pd.to_datetime(["2026-05-15", "2026-05-26", "2026-05-15"], utc=True)})


def test_negative_reason_labels_censored_moments_before_it(settings: Settings) -> None:
    y = make_labels(_crm("disqualified:no_budget"), MOMENTS, settings)  # type: ignore[arg-type]
    # before the rejection: answered (0); after it, and for the other lead: still censored
    assert y["y_sql"].tolist()[0] == 0.0 and y["y_opp"].tolist()[0] == 0.0
    assert np.isnan(y["y_sql"].tolist()[1]) and np.isnan(y["y_sql"].tolist()[2])


def test_censor_reasons_and_conversions_keep_the_ordinary_rule(settings: Settings) -> None:
    for reason in ("returned_not_ready", "disqualified:other", "disqualified:unknown_code", None):
        y = make_labels(_crm(reason), MOMENTS, settings)  # type: ignore[arg-type]
        assert np.isnan(y["y_sql"]).all(), reason
    y = make_labels(_crm("disqualified:no_budget", converts=True), MOMENTS, settings)  # type: ignore[arg-type]
    assert y["y_sql"].tolist()[:2] == [1.0, 1.0]  # a conversion in the window wins over the rejection


def test_previous_returns_family(settings: Settings) -> None:
    from leadscore.config import load_settings
    from leadscore.features import compute

    on = load_settings(overrides=["features.families={returns: {enabled: true}}"])
    crm = history(
        "2026-06-01",
        leads=[{"lead_id": "L1", "created_at": "2026-04-01"}],
        activities=[{"activity_id": "a1", "lead_id": "L1", "occurred_at": "2026-04-02", "type": "page_view"}],
        stage_changes=[{"lead_id": "L1", "stage": "mql", "changed_at": "2026-04-05", "set_by": "rule"},
                       {"lead_id": "L1", "stage": "recycled", "changed_at": "2026-04-10", "set_by": "sales",
                        "reason": "returned_not_ready"},
                       {"lead_id": "L1", "stage": "disqualified", "changed_at": "2026-05-01", "set_by": "sales",
                        "reason": "disqualified:no_budget"}],
    )
    moments = pd.DataFrame({"lead_id": ["L1"] * 3,
                            "as_of": pd.to_datetime(["2026-04-06", "2026-04-20", "2026-05-11"], utc=True)})
    got = compute(crm, moments, on)  # type: ignore[arg-type]
    assert got["times_returned"].tolist() == [0.0, 1.0, 2.0]
    assert got["times_disqualified"].tolist() == [0.0, 0.0, 1.0]
    assert np.isnan(got["days_since_last_return"][0]) and got["days_since_last_return"].tolist()[1:] == [10.0, 10.0]
    assert "times_returned" not in compute(crm, moments, settings).columns  # off by default: schema unchanged
