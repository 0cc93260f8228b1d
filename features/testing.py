"""Build small CRM histories by hand, with the canonical dtypes ``load_history`` produces.

Used by the tests (hand-built cases with known answers) and handy in notebooks; real data goes
through :func:`leadscore.history.load_history`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from leadscore.history import CRMHistory, _canonical, empty_table
from leadscore.tables import TABLES

if TYPE_CHECKING:
    from leadscore.config import Settings


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


_GENERATED: dict[tuple[int, int, int], tuple[str, CRMHistory | None]] = {}


def generated_history(settings: Settings, n_leads: int = 2000, months: int = 12, seed: int = 1) -> CRMHistory:
    """A generated CRM loaded through ``load_history`` (generated once per process and size)."""
    from leadscore.history import load_history

    key = (n_leads, months, seed)
    directory = generated_crm_dir(settings, n_leads, months, seed)
    if _GENERATED[key][1] is None:
        hist, _ = load_history(directory, settings)
        _GENERATED[key] = (directory, hist)
    loaded = _GENERATED[key][1]
    assert loaded is not None
    return loaded


def generated_crm_dir(settings: Settings, n_leads: int = 2000, months: int = 12, seed: int = 1) -> str:
    """Directory of a generated CRM (written once per process and size, in a temporary directory)."""
    import tempfile

    from leadscore.generate import generate_crm

    key = (n_leads, months, seed)
    if key not in _GENERATED:
        directory = tempfile.mkdtemp(prefix=f"leadscore-crm-{n_leads}-")
        generate_crm(directory, n_leads=n_leads, months=months, seed=seed, settings=settings)
        _GENERATED[key] = (directory, None)
    return _GENERATED[key][0]


def sub_histories(history: CRMHistory) -> Callable[[str], CRMHistory]:
    """A function giving what the online caller passes for a lead: the lead, its account, the
    account's other leads and all their rows (row positions are indexed once, lookups are cheap)."""
    leads, accounts, opps = history.leads, history.accounts, history.opportunities
    lead_acc = dict(zip(leads["lead_id"], leads["account_id"], strict=True))
    leads_of_acc = leads.groupby("account_id").indices
    lead_pos = {k: i for i, k in enumerate(leads["lead_id"])}
    acc_pos = {k: i for i, k in enumerate(accounts["account_id"])}
    by_lead = {name: history.table(name).groupby("lead_id").indices
               for name in ("activities", "stage_changes", "opportunities")}
    opp_by_acc = opps.groupby("account_id").indices

    def rows(name: str, lead_ids: list[str]) -> pd.DataFrame:
        idx = [by_lead[name][lid] for lid in lead_ids if lid in by_lead[name]]
        pos = np.sort(np.concatenate(idx)) if idx else np.zeros(0, dtype=np.int64)
        return history.table(name).iloc[pos].reset_index(drop=True)

    def sub(lead_id: str) -> CRMHistory:
        account = lead_acc.get(lead_id)
        if isinstance(account, str):
            pos = leads_of_acc[account]
            lead_ids = list(leads["lead_id"].iloc[pos])
            acc_rows = accounts.iloc[[acc_pos[account]]].reset_index(drop=True)
        else:
            pos = np.array([lead_pos[lead_id]])
            lead_ids = [lead_id]
            acc_rows = accounts.iloc[0:0]
        opp_pos = [by_lead["opportunities"][lid] for lid in lead_ids if lid in by_lead["opportunities"]]
        if isinstance(account, str) and account in opp_by_acc:
            opp_pos.append(opp_by_acc[account])
        opp_idx = np.unique(np.concatenate(opp_pos)) if opp_pos else np.zeros(0, dtype=np.int64)
        return CRMHistory(
            accounts=acc_rows,
            leads=leads.iloc[np.sort(pos)].reset_index(drop=True),
            activities=rows("activities", lead_ids),
            stage_changes=rows("stage_changes", lead_ids),
            opportunities=opps.iloc[opp_idx].reset_index(drop=True),
            cutoff=history.cutoff,
        )

    return sub


def sub_history(history: CRMHistory, lead_id: str) -> CRMHistory:
    """One lead's online history (see :func:`sub_histories`)."""
    return sub_histories(history)(lead_id)
