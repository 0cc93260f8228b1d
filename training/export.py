"""Scores back to the CRM as import files, and what was last exported (``--changed-only``).

HubSpot and Segment ignore a webhook's response body, so a score the service answers never reaches the
CRM by itself: the CRM needs a file it imports (this module) or an API push (:mod:`training.sync_hubspot`).

* ``hubspot``: a contact import CSV: ``Record ID`` (the lead id is the HubSpot contact id, as the
  HubSpot importer and webhooks use it), custom properties ``leadscore_p_sql``,
  ``leadscore_p_opportunity``, ``leadscore_stage``, ``leadscore_reasons`` (create them once in HubSpot as
  number, number, single-line text, multi-line text), and ``Lifecycle Stage`` in HubSpot's internal
  values (:data:`HUBSPOT_LIFECYCLE`).
* ``salesforce``: a Data Loader CSV for the Lead object: ``Id`` and the custom fields
  ``Leadscore_P_SQL__c``, ``Leadscore_P_Opportunity__c``, ``Leadscore_Stage__c``,
  ``Leadscore_Reasons__c``, ``Leadscore_Scored_At__c``.

The **score band** is the tenth of P(SQL) a score falls in (``"0"``..``"9"``): ``--changed-only`` keeps a
lead only when its recommended stage or its band differs from what was last exported to that target,
so a CRM is not rewritten for every third-decimal wobble, yet a lead that cooled down by a tenth is.
The state lives in the event store's ``score_exports`` table (migration 0005), one row per
(target, lead), written after the file is complete.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
import sqlalchemy as sa

from leadscore.serving.store_tables import score_exports_t, to_micros

if TYPE_CHECKING:
    from leadscore.serving.store import EventStore

ExportFormat = Literal["hubspot", "salesforce"]
FORMATS: tuple[ExportFormat, ...] = ("hubspot", "salesforce")
#: leadscore stages → HubSpot ``lifecyclestage`` internal values (HubSpot has no recycled or
#: disqualified stage: a recycled lead goes back to ``lead``, a disqualified one to ``other``)
HUBSPOT_LIFECYCLE = {"subscriber": "subscriber", "lead": "lead", "recycled": "lead", "mql": "marketingqualifiedlead",
                     "sql": "salesqualifiedlead", "opportunity": "opportunity", "customer": "customer",
                     "disqualified": "other"}
#: HubSpot custom contact properties written by the file export and the API sync
HUBSPOT_PROPERTIES = ("leadscore_p_sql", "leadscore_p_opportunity", "leadscore_stage", "leadscore_reasons")


def score_band(p_sql: float | np.ndarray) -> np.ndarray:
    """The tenth of P(SQL) as ``"0"``..``"9"`` (1.0 falls in ``"9"``)."""
    tenth = np.clip(np.floor(np.asarray(p_sql, dtype=np.float64) * 10), 0, 9).astype(int)
    return np.array([str(t) for t in np.atleast_1d(tenth)], dtype=object)


def _reasons_text(frame: pd.DataFrame) -> pd.Series:
    return frame["reasons_positive"].map(lambda s: "; ".join(json.loads(s)))


def hubspot_properties(frame: pd.DataFrame) -> list[dict[str, str]]:
    """Per score row the HubSpot contact properties (strings, as the CRM API stores them)."""
    reasons = _reasons_text(frame)
    return [{"leadscore_p_sql": f"{p:.6f}", "leadscore_p_opportunity": f"{q:.6f}", "leadscore_stage": str(s),
             "leadscore_reasons": str(r), "lifecyclestage": HUBSPOT_LIFECYCLE[str(s)]}
            for p, q, s, r in zip(frame["p_sql"], frame["p_opportunity"], frame["stage"], reasons, strict=True)]


def crm_frame(frame: pd.DataFrame, fmt: ExportFormat) -> pd.DataFrame:
    """The import file rows of one chunk of scores (:data:`training.batch_score.COLUMNS`)."""
    reasons = _reasons_text(frame)
    if fmt == "hubspot":
        return pd.DataFrame({
            "Record ID": frame["lead_id"].to_numpy(),
            "leadscore_p_sql": frame["p_sql"].round(6).to_numpy(),
            "leadscore_p_opportunity": frame["p_opportunity"].round(6).to_numpy(),
            "leadscore_stage": frame["stage"].to_numpy(),
            "leadscore_reasons": reasons.to_numpy(),
            "Lifecycle Stage": frame["stage"].map(HUBSPOT_LIFECYCLE).to_numpy(),
        })
    if fmt == "salesforce":
        return pd.DataFrame({
            "Id": frame["lead_id"].to_numpy(),
            "Leadscore_P_SQL__c": frame["p_sql"].round(6).to_numpy(),
            "Leadscore_P_Opportunity__c": frame["p_opportunity"].round(6).to_numpy(),
            "Leadscore_Stage__c": frame["stage"].to_numpy(),
            "Leadscore_Reasons__c": reasons.to_numpy(),
            "Leadscore_Scored_At__c": pd.to_datetime(frame["scored_at"], utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ").to_numpy(),
        })
    raise ValueError(f"unknown export format {fmt!r} (known: {', '.join(FORMATS)})")


def last_exported(store: EventStore, target: str, lead_ids: Iterable[str]) -> dict[str, tuple[str, str]]:
    """``lead_id → (stage, band)`` last exported to ``target`` for these leads."""
    ids = list(lead_ids)
    out: dict[str, tuple[str, str]] = {}
    with store.read() as conn:
        for start in range(0, len(ids), 500):
            rows = conn.execute(sa.select(score_exports_t.c.lead_id, score_exports_t.c.stage, score_exports_t.c.band)
                                .where(score_exports_t.c.target == target,
                                       score_exports_t.c.lead_id.in_(ids[start : start + 500])))
            out.update({r[0]: (r[1], r[2]) for r in rows})
    return out


def changed(frame: pd.DataFrame, previous: dict[str, tuple[str, str]]) -> pd.DataFrame:
    """The rows whose stage or score band differs from ``previous`` (or that were never exported)."""
    bands = score_band(frame["p_sql"].to_numpy())
    keep = [previous.get(lead) != (str(stage), band)
            for lead, stage, band in zip(frame["lead_id"], frame["stage"], bands, strict=True)]
    return frame.loc[np.asarray(keep, dtype=bool)]


def record_exported(store: EventStore, target: str, frame: pd.DataFrame, at: pd.Timestamp | None = None) -> None:
    """Remember ``frame``'s stage and band as exported to ``target`` (upsert per lead; idempotent)."""
    if frame.empty:
        return
    when = to_micros(at if at is not None else pd.Timestamp.now(tz="UTC"))
    bands = score_band(frame["p_sql"].to_numpy())
    rows = [{"target": target, "lead_id": str(lead), "stage": str(stage), "band": band, "p_sql": float(p),
             "exported_at": when}
            for lead, stage, band, p in zip(frame["lead_id"], frame["stage"], bands, frame["p_sql"], strict=True)]
    ids = [r["lead_id"] for r in rows]
    with store.begin() as conn:
        for start in range(0, len(ids), 500):
            conn.execute(sa.delete(score_exports_t).where(score_exports_t.c.target == target,
                                                          score_exports_t.c.lead_id.in_(ids[start : start + 500])))
        conn.execute(sa.insert(score_exports_t), rows)
