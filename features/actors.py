"""Who acted: only the lead's own activities are interest (ARCHITECTURE §1, ``activities.actor``).

A rep's call, email or meeting says what sales did, not what the lead wants; counted as interest it
would make every lead sales touched look engaged, and a model trained on it would learn the SLA
process (leads get touched because they are MQLs) instead of buying intent. Sales touches are dropped
here, by type (``sales_activities`` of ``configs/activities.yaml``) and by ``actor``, before the
kernel sees the history, so every feature family, batch and online alike, reads the lead's side only.
Histories are canonical here (types and actors lower-cased by :mod:`leadscore.history` and the store).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from leadscore.config import Settings


def sales_rows(activities: pd.DataFrame, settings: Settings,
               sales_type: np.ndarray | None = None) -> np.ndarray | None:
    """Mask of the sales touches of ``activities``, by ``actor`` or by type; None when there are none.

    ``sales_type`` (optional): which rows have a sales type, when the caller already matched the type
    names exactly (``features.engine.prepare`` does, in its one pass over them); else ``isin`` here.
    """
    sales = settings.sales_activity_names
    drop = None
    if "actor" in activities.columns:
        drop = (activities["actor"] == "sales").to_numpy(dtype=bool, na_value=False)
    if sales and "type" in activities.columns:
        by_type = (sales_type if sales_type is not None
                   else activities["type"].isin(sales).to_numpy(dtype=bool, na_value=False))
        drop = by_type if drop is None else drop | by_type
    return drop if drop is not None and drop.any() else None


def lead_side(activities: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """``activities`` without sales touches (the frame itself when there are none: no copy)."""
    drop = sales_rows(activities, settings)
    if drop is None:
        return activities
    return activities.loc[~drop].reset_index(drop=True)
