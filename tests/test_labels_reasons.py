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
