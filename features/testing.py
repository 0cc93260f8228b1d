"""Build small CRM histories by hand, with the canonical dtypes ``load_history`` produces.

Used by the tests (hand-built cases with known answers) and handy in notebooks; real data goes
through :func:`leadscore.history.load_history`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from leadscore.history import CRMHistory, _canonical, empty_table
from leadscore.tables import TABLES


def table(name: str, rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """A canonical-dtype frame for table ``name`` from dict rows (missing columns are empty)."""
    spec = TABLES[name]
    rows = list(rows)
    if not rows:
        return empty_table(spec)
    raw = pd.DataFrame([{c: r.get(c) for c in spec.columns} for r in rows])
    canon = _canonical(raw, spec)
    return canon[list(spec.columns)].reset_index(drop=True)


def history(
    cutoff: str | pd.Timestamp,
    leads: Iterable[Mapping[str, Any]] = (),
    activities: Iterable[Mapping[str, Any]] = (),
    stage_changes: Iterable[Mapping[str, Any]] = (),
    opportunities: Iterable[Mapping[str, Any]] = (),
    accounts: Iterable[Mapping[str, Any]] = (),
) -> CRMHistory:
    """A :class:`CRMHistory` from dict rows; timestamps may be strings (taken as UTC)."""
    cut = pd.Timestamp(cutoff)
    cut = (cut.tz_localize("UTC") if cut.tzinfo is None else cut.tz_convert("UTC")).as_unit("us")
    return CRMHistory(
        accounts=table("accounts", accounts),
        leads=table("leads", leads),
        activities=table("activities", activities),
        stage_changes=table("stage_changes", stage_changes),
        opportunities=table("opportunities", opportunities),
        cutoff=cut,
    )
