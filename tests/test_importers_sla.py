"""Importers map what an export says about the SLA: owners, sales touches (actor = sales), reasons, links."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from leadscore.config import Settings
from leadscore.history import load_history
from leadscore.importers.hubspot import import_hubspot
from leadscore.importers.salesforce import import_salesforce
from leadscore.importers.sla_fields import reason_code

HUBSPOT = """Record ID,Create Date,Email,Contact owner,Owner Assigned Date,Last Contacted,\
Date of last meeting booked in meetings tool,First marketing email open date,First marketing email click date,\
First marketing email reply date,Recent Sales Email Opened Date,Recent Sales Email Clicked Date,\
Recent Sales Email Replied Date,First Deal Created Date,Marketing emails bounced,Unsubscribed from all email,\
Associated Company IDs,HubSpot Team,Favourite Colour
1,2026-01-02 09:00,a@acme.com,Rita Rep,2026-01-03 10:00,2026-01-04 11:00,2026-01-05 12:00,2026-01-02 13:00,\
2026-01-02 14:00,2026-01-02 15:00,2026-01-04 16:00,2026-01-04 17:00,2026-01-04 18:00,2026-01-06 09:00,0,false,11;12,EMEA,red
2,2026-01-03 09:00,b@init.io,Sam Sales,2026-01-03 12:00,,,,,,,,,,2,true,12,,blue
"""
COMPANIES = "Record ID,Company name,Create Date\n11,Acme,2025-01-01\n12,Initech,2025-02-01\n"


def test_hubspot_sla_columns(tmp_path: Path, settings: Settings) -> None:
    (tmp_path / "c.csv").write_text(HUBSPOT)
    (tmp_path / "co.csv").write_text(COMPANIES)
    report = import_hubspot(tmp_path / "c.csv", tmp_path / "out", settings, companies=tmp_path / "co.csv")
    contacts = report.files[0]
    assert contacts.unmapped == ["Favourite Colour"]  # every SLA column of the issue is mapped
    history, validation = load_history(tmp_path / "out", settings, write_rejected=False)
    assert all(t.rejected_rows == 0 for t in validation.tables.values()), validation.to_dict()
    leads = history.leads.set_index("lead_id")
    assert leads.loc["1", "owner"] == "Rita Rep" and leads.loc["2", "owner"] == "Sam Sales"
    assert leads.loc["1", "account_id"] == "11" and leads.loc["2", "account_id"] == "12"  # linked by association
    acts = history.activities
    sales = acts[acts["actor"] == "sales"]
    assert sorted(sales.loc[sales["lead_id"] == "1", "type"]) == ["owner_assigned", "sales_touch"]
    lead_side = acts[(acts["actor"] == "lead") & (acts["lead_id"] == "1")]
    assert sorted(lead_side["type"]) == ["email_click"] * 4 + ["email_open"] * 2 + ["meeting_booked"]
    opp = history.stage_changes[history.stage_changes["stage"] == "opportunity"]
    assert list(opp["lead_id"]) == ["1"]  # First Deal Created Date
    props = pd.read_parquet(tmp_path / "out" / "lead_properties.parquet")
    assert {"email_bounced", "unsubscribed"} <= set(props.columns)  # undated: kept per lead, never invented
    assert any("several companies" in n for n in report.notes)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["owner_teams"] == {"Rita Rep": "EMEA"}  # Sam's team is not filled: no team declared


SF_LEADS = """Id,Company,Email,Status,CreatedDate,Owner Name,Owner Role,Unqualified Reason,LastActivityDate,\
LastTransferDate
00Q1,Acme,a@acme.com,Closed - Not Converted,2026-01-05T09:00:00Z,Rita Rep,EMEA SDR,No Budget,2026-01-07T10:00:00Z,\
2026-01-05T12:00:00Z
00Q2,Init,b@init.io,Nurturing,2026-01-06T09:00:00Z,Sam Sales,US SDR,Not ready,2026-01-08T10:00:00Z,
00Q3,Hooli,c@hooli.com,Nurturing,2026-01-06T09:00:00Z,Sam Sales,US SDR,,,
00Q4,Pied,d@pied.com,Nurturing,2026-01-06T09:00:00Z,Sam Sales,EMEA SDR,,,
"""
SF_HISTORY = """Id,LeadId,Field,OldValue,NewValue,CreatedDate
1,00Q1,Status,Open - Not Contacted,Working - Contacted,2026-01-06T10:00:00Z
2,00Q1,Status,Working - Contacted,Closed - Not Converted,2026-01-09T10:00:00Z
3,00Q2,Status,Working - Contacted,Nurturing,2026-01-10T10:00:00Z
"""


def test_salesforce_owner_reason_and_sales_touches(tmp_path: Path, settings: Settings) -> None:
    (tmp_path / "l.csv").write_text(SF_LEADS)
    (tmp_path / "h.csv").write_text(SF_HISTORY)
    import_salesforce(tmp_path / "l.csv", tmp_path / "out", settings, history=tmp_path / "h.csv")
    history, validation = load_history(tmp_path / "out", settings, write_rejected=False)
    assert all(t.rejected_rows == 0 for t in validation.tables.values()), validation.to_dict()
    owners = dict(zip(history.leads["lead_id"], history.leads["owner"], strict=True))
    assert owners == {"00Q1": "Rita Rep", "00Q2": "Sam Sales", "00Q3": "Sam Sales", "00Q4": "Sam Sales"}
    # the owner role is the team; one lead filed under another role does not move the rep
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["owner_teams"] == {"Rita Rep": "EMEA SDR", "Sam Sales": "US SDR"}
    sc = history.stage_changes.dropna(subset=["reason"])
    assert dict(zip(sc["lead_id"], sc["reason"], strict=True)) == {"00Q1": "disqualified:no_budget",
                                                                   "00Q2": "returned_not_ready"}
    acts = history.activities
    assert set(acts["actor"]) == {"sales"} and set(acts["type"]) == {"sales_touch", "owner_assigned"}


def test_reason_codes_come_from_the_catalogue(settings: Settings) -> None:
    assert reason_code("Wrong persona", "disqualified", settings) == "disqualified:wrong_persona"
    assert reason_code("returned - not ready", "recycled", settings) == "returned_not_ready"
    assert reason_code("Moved to Mars", "disqualified", settings) == "disqualified:moved_to_mars"
    assert reason_code(None, "recycled", settings) is None
