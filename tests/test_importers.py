"""HubSpot and Salesforce importers on small hand-written exports (tests/data/).

Each test reads the tables back through ``load_history`` — the same validation every history gets —
and checks both what was mapped and that bad rows are rejected with their reason, never dropped.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from leadscore.cli import app
from leadscore.config import Settings
from leadscore.history import load_history
from leadscore.importers.common import ImportFailed, match_columns, normalize_header
from leadscore.importers.hubspot import CONTACT_FIELDS, import_hubspot
from leadscore.importers.salesforce import import_salesforce

DATA = Path(__file__).parent / "data"


def test_header_matching_is_case_and_space_insensitive() -> None:
    cols = ["  record id ", "CREATEDATE", "Country/Region", "Favourite Colour"]
    m = match_columns(cols, CONTACT_FIELDS, "x.csv")
    assert m.mapping["lead_id"] == "  record id "
    assert m.mapping["created_at"] == "CREATEDATE"
    assert m.mapping["country"] == "Country/Region"
    assert m.unmapped == ["Favourite Colour"]
    assert normalize_header("Became a Marketing Qualified Lead Date") == "becameamarketingqualifiedleaddate"


def test_hubspot_contacts_and_deals(tmp_path: Path, settings: Settings) -> None:
    out = tmp_path / "hs"
    report = import_hubspot(DATA / "hubspot_contacts.csv", out, settings, deals=DATA / "hubspot_deals.csv")
    contacts = report.files[0]
    assert set(contacts.unmapped) == {"First Name", "Favourite Colour"}
    assert contacts.mapping["became_sql"] == "Became a Sales Qualified Lead Date"
    v = report.validation.tables
    # lead 104 has "not a date" as Create Date: rejected with the reason, not dropped
    assert v["leads"].input_rows == 5 and v["leads"].valid_rows == 4
    assert "unparseable timestamp in created_at" in v["leads"].reasons
    # lead 105's MQL date "31/31/2026" is rejected; its other stage rows survive
    assert "unparseable timestamp in changed_at" in v["stage_changes"].reasons
    rejected = pd.read_parquet(out / "_rejected" / "stage_changes.parquet")
    assert "31/31/2026" in set(rejected["changed_at"])
    assert v["leads"].valid_rows + v["leads"].rejected_rows == v["leads"].input_rows

    history, _ = load_history(out, settings)
    sc = history.stage_changes
    ana = sc[sc["lead_id"] == "101"].sort_values("changed_at")
    assert list(ana["stage"]) == ["lead", "mql", "sql"]
    assert set(sc["set_by"]) == {"import"}
    # counters are not activities; conversion dates are (first == recent for lead 102 counts once)
    acts = history.activities
    assert set(acts["type"]) == {"form_submit"}
    assert (acts["lead_id"] == "102").sum() == 1
    assert json.loads(acts["properties"].iloc[0])["source_field"] in {"First Conversion Date", "Recent Conversion Date"}
    props = pd.read_parquet(out / "lead_properties.parquet")
    assert props.set_index("lead_id").loc["101", "num_pageviews"] == "42"
    # accounts built from contact fields: Acme once, domain cleaned, created at its first contact
    acc = history.accounts.set_index("account_id")
    assert acc.loc["domain:acme.com", "domain"] == "acme.com"
    assert acc.loc["domain:acme.com", "created_at"] == pd.Timestamp("2026-01-05 09:15", tz="UTC")
    assert history.leads.set_index("lead_id").loc["101", "email_domain"] == "acme.com"
    # deals: won deal closed, open deal's expected close date dropped, orphan and negative rejected
    opp = history.opportunities.set_index("opportunity_id")
    assert bool(opp.loc["9001", "is_won"]) and opp.loc["9001", "lead_id"] == "103"
    assert opp["closed_at"].isna()["9002"] and opp["is_won"].isna()["9002"]
    assert v["opportunities"].reasons == {"empty required field lead_id": 1, "negative amount": 1}
    # default cut-off: the latest event in the export
    assert history.cutoff == pd.Timestamp("2026-04-01 08:00", tz="UTC")


def test_hubspot_lower_case_internal_names(tmp_path: Path, settings: Settings) -> None:
    report = import_hubspot(DATA / "hubspot_contacts_lower.csv", tmp_path / "o", settings)
    assert report.validation.usable
    history, _ = load_history(tmp_path / "o", settings)
    assert len(history.leads) == 2 and list(history.stage_changes["stage"]) == ["mql"]
    assert set(history.leads["job_title"]) == {"CTO", "Analyst"}
    assert len(history.activities) == 2
    assert any("Number of Pageviews".lower() in n.lower() for n in report.notes)


def test_hubspot_companies_export(tmp_path: Path, settings: Settings) -> None:
    report = import_hubspot(
        DATA / "hubspot_contacts_companies.csv", tmp_path / "o", settings, companies=DATA / "hubspot_companies.csv"
    )
    v = report.validation.tables
    assert v["accounts"].reasons == {"unparseable value in employees": 1}
    assert any("not in the companies export" in n for n in report.notes)
    history, _ = load_history(tmp_path / "o", settings)
    leads = history.leads.set_index("lead_id")
    assert leads.loc["201", "account_id"] == "C1"
    assert leads["account_id"].isna()["203"]  # C9 unknown: link left empty, lead kept


def test_hubspot_missing_id_column(tmp_path: Path, settings: Settings) -> None:
    bad = tmp_path / "c.csv"
    bad.write_text("Email,Create Date\na@b.com,2026-01-01\n")
    with pytest.raises(ImportFailed, match="lead_id"):
        import_hubspot(bad, tmp_path / "o", settings)
    with pytest.raises(ImportFailed, match="does not exist"):
        import_hubspot(tmp_path / "nope.csv", tmp_path / "o", settings)


def test_hubspot_missing_columns(tmp_path: Path, settings: Settings) -> None:
    no_date = tmp_path / "c.csv"
    no_date.write_text("Record ID,Email\n1,a@b.com\n")
    with pytest.raises(ImportFailed, match="create-date"):
        import_hubspot(no_date, tmp_path / "o", settings)
    # a deals export without association or amount columns: deals are kept as far as they go,
    # and the missing link is reported and rejected, not guessed
    contacts = tmp_path / "contacts.csv"
    contacts.write_text("Record ID,Create Date,First Conversion Date\n1,2026-01-01,2026-01-02\n")
    deals = tmp_path / "deals.csv"
    deals.write_text("deal id,dealstage,createdate\nD1,closedwon,2026-01-05\n")
    report = import_hubspot(contacts, tmp_path / "o", settings, deals=deals)
    assert "amount" in report.files[1].missing and "lead_id" in report.files[1].missing
    assert report.validation.tables["opportunities"].reasons == {"empty required field lead_id": 1}
    assert report.validation.tables["leads"].valid_rows == 1


def test_hubspot_undated_lifecycle_stage_is_not_invented(tmp_path: Path, settings: Settings) -> None:
    contacts = tmp_path / "c.csv"
    contacts.write_text(
        "Record ID,Create Date,Lifecycle Stage,Became a Lead Date,Time First Seen\n"
        "1,2026-01-01,Customer,2026-01-01,2026-01-01\n"
        "2,2026-01-02,lead,2026-01-02,2026-01-02\n"
    )
    report = import_hubspot(contacts, tmp_path / "o", settings)
    assert any(n.startswith("1 contacts have a current Lifecycle Stage") for n in report.notes)
    history, _ = load_history(tmp_path / "o", settings)
    assert "customer" not in set(history.stage_changes["stage"])
    assert set(history.activities["type"]) == {"page_view"}


def test_salesforce_full(tmp_path: Path, settings: Settings) -> None:
    out = tmp_path / "sf"
    report = import_salesforce(
        DATA / "sf_leads.csv", out, settings, history=DATA / "sf_lead_history.csv",
        opportunities=DATA / "sf_opportunities.csv", campaign_members=DATA / "sf_campaign_members.csv",
    )
    assert report.files[0].unmapped == ["FirstName", "LastName"]
    assert any("Pending Review" in n for n in report.notes)
    v = report.validation.tables
    assert "unparseable timestamp in created_at" in v["leads"].reasons  # "yesterday"
    assert "unparseable timestamp in occurred_at" in v["activities"].reasons  # "13/45/2026"
    history, _ = load_history(out, settings)
    sc = history.stage_changes
    ana = sc[sc["lead_id"] == "00Q1"].sort_values("changed_at")
    # created → lead; Working → mql; Closed - Converted and ConvertedDate (same moment) → sql, opportunity
    assert list(ana["stage"]) == ["lead", "mql", "sql", "opportunity"] or list(ana["stage"]) == [
        "lead", "mql", "opportunity", "sql"]
    eve = sc[sc["lead_id"] == "00Q5"]
    assert set(eve["stage"]) == {"lead", "sql"}  # converted without an opportunity
    # the current status is never back-dated: 00Q2 is "Working" only via its history row
    assert set(sc[sc["lead_id"] == "00Q2"]["stage"]) == {"lead", "mql"}
    opp = history.opportunities.set_index("opportunity_id")
    assert opp.loc["0061", "lead_id"] == "00Q1" and bool(opp.loc["0061", "is_won"])
    assert v["opportunities"].reasons == {"empty required field lead_id": 2}
    acts = history.activities.set_index("activity_id")
    assert acts.loc["salesforce:00v1", "type"] == "webinar_attended"
    assert acts.loc["salesforce:00v2", "type"] == "email_click"
    assert acts.loc["salesforce:00v4", "type"] == "other"
    assert "salesforce:00v3" not in acts.index  # never responded


def test_salesforce_lower_case_headers_and_status_map(tmp_path: Path, settings: Settings) -> None:
    smap = tmp_path / "status.yaml"
    smap.write_text("status_map:\n  Pending Review: recycled\n")
    out = tmp_path / "o"
    report = import_salesforce(
        DATA / "sf_lead_lowercase.csv", out, settings, history=DATA / "sf_lead_history.csv", status_map=smap
    )
    assert report.files[0].mapping["lead_id"] == "id" and report.files[0].mapping["created_at"] == "createddate"
    assert not report.validation.usable  # no activities without a CampaignMember export
    assert any("no CampaignMember export" in n for n in report.notes)
    smap.write_text("status_map:\n  Pending Review: maybe\n")
    with pytest.raises(ImportFailed, match="unknown stage 'maybe'"):
        import_salesforce(DATA / "sf_lead_lowercase.csv", out, settings, status_map=smap)


def test_cli_import_hubspot(tmp_path: Path) -> None:
    src = tmp_path / "contacts.csv"
    shutil.copy(DATA / "hubspot_contacts.csv", src)
    result = CliRunner().invoke(
        app, ["import", "hubspot", "--contacts", str(src), "--deals", str(DATA / "hubspot_deals.csv"),
              "--out", str(tmp_path / "o"), "--json", str(tmp_path / "r.json")],
    )
    assert result.exit_code == 0, result.output
    assert "Favourite Colour" in result.output and "rejected" in result.output.lower()
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["validation"]["tables"]["leads"]["rejected_rows"] == 1
    bad = CliRunner().invoke(app, ["import", "salesforce", "--leads", str(tmp_path / "x.csv"), "--out", str(tmp_path)])
    assert bad.exit_code == 2
