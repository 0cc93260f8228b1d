"""What CRM exports say about the SLA: owners, sales touches and rejection reasons (issue 16).

Shared by the HubSpot and Salesforce importers so the two map the same concepts the same way:

* an **owner** column (a rep's name or id) → ``leads.owner``; a **team** column (HubSpot's team,
  Salesforce's owner role) → an owner → team map in ``manifest.json`` (``owner_teams``, read by the SLA
  operations review; :func:`owner_team_map`);
* **dated** columns → one activity per filled date, at exactly that time, with the ``actor`` that
  acted: ``sales`` for what a rep did (assigned, contacted, sent a sales email), ``lead`` for what the
  lead did (opened, clicked or replied to an email, booked a meeting). A sales touch is kept for the
  SLA review and never counts as interest (:mod:`leadscore.features.actors`);
* a free-text **reason** ("No Budget", "Not ready") → a reason code of ``configs/reasons.yaml``
  (:func:`reason_code`), put on the lead's latest dated change to the stage the reason goes with.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

from leadscore.importers.common import ColumnMatch, column, parse_ts_lenient
from leadscore.tables import text_dtype

if TYPE_CHECKING:
    import pandas as pd

    from leadscore.config import Settings

#: a dated event column: (activity type, actor)
DatedEvent = tuple[str, str]


def dated_activities(
    frame: pd.DataFrame, cm: ColumnMatch, lead_id: pd.Series, events: dict[str, DatedEvent], source: str
) -> list[pd.DataFrame]:
    """One activity frame per mapped dated column (rows without a date dropped), ids not yet set."""
    import pandas as pd

    out = []
    for field, (kind, actor) in events.items():
        src = cm.source(field)
        if not src:
            continue
        part = pd.DataFrame({"lead_id": lead_id, "occurred_at": column(frame, cm, field), "type": kind,
                             "properties": json.dumps({"source_field": src, "imported_from": source}),
                             "actor": actor})
        out.append(part[part["occurred_at"].notna()])
    return out


def owner_team_map(owner: pd.Series, team: pd.Series) -> dict[str, str]:
    """Owner → team from an export's per-lead owner and team columns: each owner's most frequent team
    (ties: the first in name order), so one mis-filed lead does not move a rep."""
    import pandas as pd

    pairs = pd.DataFrame({"owner": owner, "team": team}).dropna()
    if pairs.empty:
        return {}
    counts = pairs.groupby(["owner", "team"]).size().reset_index(name="n")
    counts = counts.sort_values(["owner", "n", "team"], ascending=[True, False, True], kind="stable")
    return {str(o): str(t) for o, t in counts.drop_duplicates("owner")[["owner", "team"]].itertuples(index=False)}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.strip().lower()).strip("_")


def reason_code(text: object, stage: str, settings: Settings) -> str | None:
    """The catalogue code for a reason written in a CRM (None when empty).

    Matches a catalogue code or label first (``disqualified - no budget``, ``No Budget``); otherwise
    builds ``disqualified:<slug>`` for a disqualification, ``returned_<slug>`` for a return: a code the
    catalogue does not know, which the review counts and the labels treat as censoring.
    """
    if not isinstance(text, str) or not text.strip():
        return None
    slug = _slug(text)
    for r in settings.reasons.catalogue:
        tail = r.code.split(":")[-1]
        same = slug in (_slug(r.code), _slug(r.label), tail, tail.removeprefix("returned_"))
        if same and (r.stage == stage or stage not in ("disqualified", "recycled")):
            return r.code
    if stage == "disqualified":
        return f"disqualified:{slug}"[:64]
    return (slug if slug.startswith("returned") else f"returned_{slug}")[:64]


def attach_reasons(stages: pd.DataFrame, reasons: pd.Series, lead_id: pd.Series, settings: Settings,
                   notes: list[str]) -> pd.DataFrame:
    """Put each lead's reason on its latest dated change to ``disqualified`` or ``recycled``.

    CRMs keep the reason as a current field, undated: it belongs to the rejection that is in force,
    the latest one. A lead with a reason but no dated rejection gets no invented stage change.
    """
    stages = stages.copy()
    if "reason" not in stages.columns:
        stages["reason"] = None
    by_lead = dict(zip(lead_id.astype(text_dtype()), reasons, strict=True))
    rejected = stages[stages["stage"].isin(["disqualified", "recycled"])].copy()
    if rejected.empty:
        if reasons.notna().any():
            notes.append(f"{int(reasons.notna().sum())} reasons without a dated rejection: not imported")
        return stages
    rejected["_ts"] = parse_ts_lenient(rejected["changed_at"])
    latest = rejected.sort_values("_ts").drop_duplicates("lead_id", keep="last")
    codes = [reason_code(by_lead.get(str(lead)), stage, settings) for lead, stage in
             zip(latest["lead_id"], latest["stage"], strict=True)]
    stages.loc[latest.index, "reason"] = codes
    known = {r.code for r in settings.reasons.catalogue}
    unknown = sorted({c for c in codes if c and c not in known})
    if unknown:
        notes.append(f"reason codes not in configs/reasons.yaml (counted as censoring): {', '.join(unknown[:10])}")
    placed = sum(c is not None for c in codes)
    if int(reasons.notna().sum()) > placed:
        notes.append(f"{int(reasons.notna().sum()) - placed} reasons without a dated rejection: not imported")
    return stages
