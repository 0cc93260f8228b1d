"""Point-in-time features, the rule-based score and closed-loop labels (ARCHITECTURE §2).

This module stays light (``leadscore.config`` imports ``features.config``): the implementation is
imported inside the functions, so importing ``features`` never pulls numba or pandas.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from leadscore.config import Settings
    from leadscore.history import CRMHistory


def compute(history: CRMHistory, moments: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """Features at scoring moments, using only rows dated ``<= as_of``.

    ``moments`` has columns ``lead_id`` and ``as_of`` (UTC). The result has one row per moment in the
    same order (RangeIndex): ``lead_id``, ``as_of``, every feature of
    :func:`features.schema.feature_schema` in order with its dtype (float64, or ``str`` with NaN when
    unknown), then ``rule_score`` (float64). The online service gets the same values from
    :func:`features.online.compute_one`.
    """
    from leadscore.features.engine import compute_features

    return compute_features(history, moments, settings)
