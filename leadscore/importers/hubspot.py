"""HubSpot CRM exports (contacts, optional companies and deals CSV) → the five CRM tables.

What becomes what, and why:

* contacts → ``leads``; "Became a ... Date" lifecycle columns → ``stage_changes`` (``set_by=import``),
  one row per filled date, because those are the only *dated* stage facts an export holds.
* Dated single events on the contact ("First/Recent Conversion Date" = a form submission, "Time
  First/Last Seen" = a page view, "Last marketing email open/click date") → ``activities`` at exactly
  that timestamp, with ``properties.source_field`` naming the column they came from.
* Aggregate counters ("Number of Pageviews", "Number of Sessions", "Number of Form Submissions", ...)
  and undated status fields ("Lifecycle Stage", "Lead Status") have **no timestamp**. Spreading them
  over invented dates would leak the future into every earlier scoring moment, so they are written to
  the side table ``lead_properties.parquet`` (one row per lead, as exported) and listed in the report;
  they never become activities.
* companies → ``accounts``; without a companies export, accounts are built from the company fields
  on the contacts (id = associated company id, else the company domain, else the company name;
  ``created_at`` = the earliest create date of its contacts, the latest moment we *know* it existed).
* deals → ``opportunities``; ``closed_at`` is kept only for closed deals, because HubSpot's "Close
  Date" of an open deal is an *expected* date, not an event.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from leadscore.importers.common import (
    ColumnMatch,
    ImportFailed,
    ImportReport,
    column,
    default_cutoff,
    email_domain,
    match_columns,
    parse_cutoff,
    parse_ts_lenient,
    read_export,
    require,
    write_and_validate,
)
from leadscore.importers.sla_fields import attach_reasons, dated_activities, owner_team_map
from leadscore.tables import text_dtype

if TYPE_CHECKING:
    import pandas as pd

    from leadscore.config import Settings

CONTACT_FIELDS: dict[str, list[str]] = {
    "lead_id": ["Record ID", "Contact ID", "hs_object_id", "vid"],
    "created_at": ["Create Date", "createdate", "Created Date", "Created At"],
    "email": ["Email", "Email Address"],
    "email_domain": ["Email Domain", "hs_email_domain"],
    "job_title": ["Job Title", "jobtitle", "Title"],
    "seniority": ["Seniority", "hs_seniority"],
    "department": ["Department", "Job Function", "job_function"],
    "country": ["Country/Region", "Country", "IP Country"],
    "source": ["Original Source", "Original Traffic Source", "hs_analytics_source", "Lead Source"],
    "account_id": [
        "Associated Company ID", "Associated Company IDs (Primary)", "Primary Associated Company ID",
        "associatedcompanyid", "Company ID", "Associated Company IDs",
    ],
    "owner": ["Contact owner", "HubSpot Owner", "hubspot_owner_id", "Owner"],
    "team": ["HubSpot Team", "hubspot_team_id"],
    "reason": ["Disqualification Reason", "Unqualified Reason", "Lead Status Reason", "hs_lead_disqualification_reason",
               "Reason Returned", "Rejection Reason"],
    "owner_assigned": ["Owner Assigned Date", "hubspot_owner_assigneddate"],
    "last_contacted": ["Last Contacted", "notes_last_contacted"],
    "last_meeting_booked": ["Date of last meeting booked in meetings tool", "engagements_last_meeting_booked"],
    "first_email_open": ["First marketing email open date", "hs_email_first_open_date"],
    "first_email_click": ["First marketing email click date", "hs_email_first_click_date"],
    "first_email_reply": ["First marketing email reply date", "hs_email_first_reply_date"],
    "sales_email_opened": ["Recent Sales Email Opened Date", "hs_sales_email_last_opened"],
    "sales_email_clicked": ["Recent Sales Email Clicked Date", "hs_sales_email_last_clicked"],
    "sales_email_replied": ["Recent Sales Email Replied Date", "hs_sales_email_last_replied"],
    "first_deal_created": ["First Deal Created Date", "first_deal_created_date"],
    "email_bounced": ["Marketing emails bounced", "hs_email_bounce"],
    "unsubscribed": ["Unsubscribed from all email", "hs_email_optout"],
    "company_name": ["Company Name", "Company"],
    "company_domain": ["Company Domain Name", "Website URL", "Website", "Domain"],
    "industry": ["Industry"],
    "employees": ["Number of Employees", "numemployees", "Employees"],
    "annual_revenue": ["Annual Revenue", "annualrevenue"],
    "lifecycle_stage": ["Lifecycle Stage", "lifecyclestage"],
    "lead_status": ["Lead Status", "hs_lead_status"],
    "became_subscriber": ["Became a Subscriber Date", "hs_lifecyclestage_subscriber_date"],
    "became_lead": ["Became a Lead Date", "hs_lifecyclestage_lead_date"],
    "became_mql": ["Became a Marketing Qualified Lead Date", "hs_lifecyclestage_marketingqualifiedlead_date"],
    "became_sql": ["Became a Sales Qualified Lead Date", "hs_lifecyclestage_salesqualifiedlead_date"],
    "became_opportunity": ["Became an Opportunity Date", "hs_lifecyclestage_opportunity_date"],
    "became_customer": ["Became a Customer Date", "hs_lifecyclestage_customer_date"],
    "first_conversion": ["First Conversion Date", "first_conversion_date"],
    "recent_conversion": ["Recent Conversion Date", "recent_conversion_date"],
    "first_seen": ["Time First Seen", "First Seen", "hs_analytics_first_timestamp"],
    "last_seen": ["Time Last Seen", "Last Seen", "hs_analytics_last_timestamp"],
    "last_email_open": ["Last marketing email open date", "hs_email_last_open_date"],
    "last_email_click": ["Last marketing email click date", "hs_email_last_click_date"],
    "num_pageviews": ["Number of Pageviews", "hs_analytics_num_page_views"],
    "num_sessions": ["Number of Sessions", "hs_analytics_num_visits"],
    "num_form_submissions": ["Number of Form Submissions", "num_conversion_events"],
    "num_unique_forms": ["Number of Unique Forms Submitted", "num_unique_conversion_events"],
    "num_email_opens": ["Marketing emails opened", "hs_email_open"],
    "num_email_clicks": ["Marketing emails clicked", "hs_email_click"],
    "num_sales_activities": ["Number of Sales Activities", "num_notes"],
}

#: lifecycle date column → our stage
STAGE_COLUMNS = {
    "became_subscriber": "subscriber",
    "became_lead": "lead",
    "became_mql": "mql",
    "became_sql": "sql",
    "became_opportunity": "opportunity",
    "became_customer": "customer",
}

#: dated single-event column → activity type
EVENT_COLUMNS = {
    "first_conversion": "form_submit",
    "recent_conversion": "form_submit",
    "first_seen": "page_view",
    "last_seen": "page_view",
    "last_email_open": "email_open",
    "last_email_click": "email_click",
}

#: dated SLA columns → (activity type, actor). What a rep did is ``sales`` (never interest); the lead's
#: answers to a sales email are its own (a reply to a rep is interest, whoever wrote first).
SLA_EVENT_COLUMNS = {
    "owner_assigned": ("owner_assigned", "sales"),
    "last_contacted": ("sales_touch", "sales"),
    "last_meeting_booked": ("meeting_booked", "lead"),
    "first_email_open": ("email_open", "lead"),
    "first_email_click": ("email_click", "lead"),
    "first_email_reply": ("email_click", "lead"),
    "sales_email_opened": ("email_open", "lead"),
    "sales_email_clicked": ("email_click", "lead"),
    "sales_email_replied": ("email_click", "lead"),
}

#: undated per-lead values kept in ``lead_properties`` (never turned into dated rows)
PROPERTY_COLUMNS = [
    "lifecycle_stage", "lead_status", "reason", "email_bounced", "unsubscribed", "num_pageviews", "num_sessions", "num_form_submissions",
    "num_unique_forms", "num_email_opens", "num_email_clicks", "num_sales_activities",
]

COMPANY_FIELDS: dict[str, list[str]] = {
    "account_id": ["Record ID", "Company ID", "hs_object_id"],
    "name": ["Company name", "Name"],
    "domain": ["Company Domain Name", "Domain", "Website URL", "Website"],
    "industry": ["Industry"],
    "employees": ["Number of Employees", "numberofemployees", "Employees"],
    "annual_revenue": ["Annual Revenue", "annualrevenue"],
    "country": ["Country/Region", "Country"],
    "created_at": ["Create Date", "createdate", "Created Date"],
}

DEAL_FIELDS: dict[str, list[str]] = {
    "opportunity_id": ["Record ID", "Deal ID", "hs_object_id"],
    "created_at": ["Create Date", "createdate", "Created Date"],
    "stage": ["Deal Stage", "dealstage", "Stage"],
    "amount": ["Amount", "amount_in_home_currency"],
    "closed_at": ["Close Date", "closedate"],
    "is_won": ["Is Closed Won", "hs_is_closed_won", "Is Won"],
    "is_closed": ["Is Deal Closed?", "Is Closed", "hs_is_closed"],
    "lead_id": [
        "Associated Contact IDs", "Associated Contact ID", "Associated Contact IDs (Primary)",
        "Associated Contact", "Contact ID",
    ],
    "account_id": [
        "Associated Company IDs", "Associated Company ID", "Associated Company IDs (Primary)",
        "Associated Company", "Company ID",
    ],
}

_WON = {"closedwon", "won", "closed won"}
_LOST = {"closedlost", "lost", "closed lost"}


def _clean_domain(s: pd.Series) -> pd.Series:
    """``https://www.Acme.com/about`` → ``acme.com``: the same company must get the same key."""
    d = s.astype(text_dtype()).str.strip().str.lower()
    d = d.str.replace(r"^[a-z]+://", "", regex=True).str.replace(r"^www\.", "", regex=True)
    return d.str.replace(r"[/?#].*$", "", regex=True).astype(text_dtype())


def _first_id(s: pd.Series) -> tuple[pd.Series, int]:
    """First id of a ``;``/``,``-separated association list, and how many cells held several."""
    text = s.astype(text_dtype()).str.strip()
    several = int(text.str.contains(r"[;,]", regex=True, na=False).sum())
    first = text.str.extract(r"^\s*([^;,]*?)\s*(?:[;,]|$)", expand=False).astype(text_dtype())
    return first.where(first.str.len() > 0).astype(text_dtype()), several


def _earliest_text(ts_text: pd.Series, keys: pd.Series) -> pd.Series:
    """Per key, the original text of its earliest parseable timestamp (a real value, not a made-up one)."""
    import pandas as pd

    frame = pd.DataFrame({"key": keys, "text": ts_text, "ts": parse_ts_lenient(ts_text)}).dropna(subset=["key", "ts"])
    first = frame.sort_values("ts").drop_duplicates("key")
    return pd.Series(first["text"].to_numpy(), index=first["key"].to_numpy(), dtype=text_dtype())


def _contacts_to_tables(
    contacts: pd.DataFrame, cm: ColumnMatch, notes: list[str]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """leads, stage_changes, activities and lead_properties from the contacts export."""
    import json

    import pandas as pd

    lead_id = column(contacts, cm, "lead_id")
    dom = column(contacts, cm, "email_domain")
    dom = dom.str.lower().astype(text_dtype()) if cm.source("email_domain") else email_domain(column(contacts, cm, "email"))
    leads = pd.DataFrame(
        {
            "lead_id": lead_id,
            "account_id": _first_id(column(contacts, cm, "account_id"))[0],
            "email_domain": dom,
            "job_title": column(contacts, cm, "job_title"),
            "seniority": column(contacts, cm, "seniority"),
            "department": column(contacts, cm, "department"),
            "country": column(contacts, cm, "country"),
            "source": column(contacts, cm, "source"),
            "created_at": column(contacts, cm, "created_at"),
            "owner": column(contacts, cm, "owner"),
        }
    )
    stage_rows = [
        pd.DataFrame({"lead_id": lead_id, "stage": stage, "changed_at": column(contacts, cm, field), "set_by": "import"})
        for field, stage in STAGE_COLUMNS.items()
        if cm.source(field)
    ]
    stages = pd.concat(stage_rows, ignore_index=True) if stage_rows else pd.DataFrame(
        columns=["lead_id", "stage", "changed_at", "set_by"]
    )
    if cm.source("first_deal_created"):  # the first deal is the lead's first opportunity
        stage_rows.append(pd.DataFrame({"lead_id": lead_id, "stage": "opportunity", "set_by": "import",
                                        "changed_at": column(contacts, cm, "first_deal_created")}))
        stages = pd.concat(stage_rows, ignore_index=True)
    stages = stages[stages["changed_at"].notna()]
    stages = stages.assign(_ts=parse_ts_lenient(stages["changed_at"])).sort_values("_ts", kind="stable")
    stages = stages.drop_duplicates(["lead_id", "stage"]).drop(columns="_ts").reset_index(drop=True)
    if not stage_rows:
        notes.append("no 'Became a ... Date' lifecycle column found: no stage changes imported")

    event_rows = []
    for field, kind in EVENT_COLUMNS.items():
        src = cm.source(field)
        if not src:
            continue
        when = column(contacts, cm, field)
        event_rows.append(
            pd.DataFrame(
                {
                    "lead_id": lead_id,
                    "occurred_at": when,
                    "type": kind,
                    "properties": json.dumps({"source_field": src, "imported_from": "hubspot"}),
                    "actor": "lead",
                }
            )
        )
    event_rows += dated_activities(contacts, cm, lead_id, SLA_EVENT_COLUMNS, "hubspot")
    if event_rows:
        acts = pd.concat(event_rows, ignore_index=True)
        acts = acts[acts["occurred_at"].notna()]
        # "First" and "Recent" conversion are the same submission when a contact converted once.
        acts = acts.drop_duplicates(["lead_id", "type", "occurred_at"]).reset_index(drop=True)
        acts.insert(0, "activity_id", "hubspot:" + acts["lead_id"].fillna("?") + ":" + acts["type"] + ":" + acts["occurred_at"])
    else:
        acts = pd.DataFrame(columns=["activity_id", "lead_id", "occurred_at", "type", "properties", "actor"])
        notes.append(
            "no dated activity column (First/Recent Conversion Date, Time First/Last Seen, last email "
            "open/click date) found: the activities table is empty"
        )
    present = [f for f in PROPERTY_COLUMNS if cm.source(f)]
    props = pd.DataFrame({"lead_id": lead_id, **{f: column(contacts, cm, f) for f in present}})
    if present:
        notes.append(
            "undated fields kept per lead in lead_properties.parquet, not as activities (no timestamp, so "
            f"they cannot be placed before a scoring moment): {', '.join(cm.mapping[f] for f in present)}"
        )
    if cm.source("lifecycle_stage"):
        import pandas as pd

        current = column(contacts, cm, "lifecycle_stage").str.lower().str.replace(r"[^a-z]", "", regex=True)
        current = current.replace({"marketingqualifiedlead": "mql", "salesqualifiedlead": "sql"})
        dated = pd.MultiIndex.from_arrays([stages["lead_id"].astype(str), stages["stage"].astype(str)])
        pairs = pd.MultiIndex.from_arrays([lead_id.astype(str), current.astype(str)])
        known_stage = current.isin(list(STAGE_COLUMNS.values())).to_numpy()
        undated = int((known_stage & ~pairs.isin(dated)).sum())
        if undated:
            notes.append(f"{undated} contacts have a current Lifecycle Stage with no matching 'Became ...' date "
                         "(kept in lead_properties; no stage change invented)")
    return leads, stages, acts, props


def _accounts(
    contacts: pd.DataFrame, cm: ColumnMatch, leads: pd.DataFrame, companies_path: Path | None,
    files: list[ColumnMatch], notes: list[str],
) -> pd.DataFrame | None:
    import pandas as pd

    if companies_path is not None:
        companies = read_export(companies_path, "HubSpot companies")
        km = match_columns(list(companies.columns), COMPANY_FIELDS, str(companies_path))
        require(km, ["account_id"], COMPANY_FIELDS)
        files.append(km)
        accounts = pd.DataFrame({f: column(companies, km, f) for f in COMPANY_FIELDS})
        accounts["domain"] = _clean_domain(accounts["domain"])
        known = set(accounts["account_id"].dropna())
        orphan = leads["account_id"].notna() & ~leads["account_id"].isin(known)
        if orphan.any():
            notes.append(f"{int(orphan.sum())} contacts name a company id not in the companies export: "
                         "their account_id is left empty")
            leads.loc[orphan, "account_id"] = pd.NA
        return accounts
    company_fields = ["company_name", "company_domain", "industry", "employees", "annual_revenue"]
    if not any(cm.source(f) for f in company_fields) and not cm.source("account_id"):
        return None
    domain = _clean_domain(column(contacts, cm, "company_domain"))
    name = column(contacts, cm, "company_name")
    key = leads["account_id"].copy()
    key = key.fillna("domain:" + domain).fillna("name:" + name.str.lower().str.strip())
    leads["account_id"] = key
    frame = pd.DataFrame(
        {
            "account_id": key,
            "name": name,
            "domain": domain,
            "industry": column(contacts, cm, "industry"),
            "employees": column(contacts, cm, "employees"),
            "annual_revenue": column(contacts, cm, "annual_revenue"),
            "country": leads["country"],
        }
    ).dropna(subset=["account_id"])
    created = _earliest_text(leads["created_at"], key)
    accounts = frame.groupby("account_id", sort=False).first().reset_index()
    accounts["created_at"] = accounts["account_id"].map(created).astype(text_dtype())
    notes.append(
        f"no companies export: {len(accounts)} accounts built from the company fields on contacts "
        "(created_at = earliest create date of their contacts)"
    )
    return accounts


def _deals(path: Path, files: list[ColumnMatch], notes: list[str]) -> pd.DataFrame:
    import pandas as pd

    deals = read_export(path, "HubSpot deals")
    dm = match_columns(list(deals.columns), DEAL_FIELDS, str(path))
    require(dm, ["opportunity_id"], DEAL_FIELDS)
    files.append(dm)
    lead, several = _first_id(column(deals, dm, "lead_id"))
    account, several_acc = _first_id(column(deals, dm, "account_id"))
    if several or several_acc:
        notes.append(f"{several} deals list several contacts and {several_acc} several companies: the first is used")
    stage = column(deals, dm, "stage")
    stage_key = stage.str.lower().str.replace(r"[^a-z ]", "", regex=True).str.strip()
    won = column(deals, dm, "is_won")
    if dm.source("is_won") is None:
        won = pd.Series(pd.NA, index=deals.index, dtype=text_dtype())
        won[stage_key.isin(_WON) | stage_key.str.replace(" ", "").isin(_WON)] = "true"
        won[stage_key.isin(_LOST) | stage_key.str.replace(" ", "").isin(_LOST)] = "false"
    if dm.source("is_closed") is None:
        closed = won.notna()
    else:
        closed = column(deals, dm, "is_closed").str.lower().isin(["true", "yes", "1"])
    close_date = column(deals, dm, "closed_at")
    dropped = int((close_date.notna() & ~closed).sum())
    if dropped:
        notes.append(f"{dropped} open deals: their Close Date is an expected date, not an event, and is not imported")
    won = won.where(closed)
    if not lead.notna().all():
        notes.append(f"{int(lead.isna().sum())} deals have no associated contact: rejected (an opportunity needs a lead)")
    return pd.DataFrame(
        {
            "opportunity_id": column(deals, dm, "opportunity_id"),
            "lead_id": lead,
            "account_id": account,
            "created_at": column(deals, dm, "created_at"),
            "stage": stage,
            "amount": column(deals, dm, "amount"),
            "closed_at": close_date.where(closed),
            "is_won": won,
        }
    )


def import_hubspot(
    contacts: Path | str,
    out_dir: Path | str,
    settings: Settings,
    companies: Path | str | None = None,
    deals: Path | str | None = None,
    cutoff: str | None = None,
) -> ImportReport:
    """Map a HubSpot export onto the CRM tables in ``out_dir`` and validate them.

    ``cutoff`` defaults to the latest timestamp in the export (see :func:`default_cutoff`).
    Raises :class:`ImportFailed` when a file is missing or has no id column.
    """
    frame = read_export(contacts, "HubSpot contacts")
    cm = match_columns(list(frame.columns), CONTACT_FIELDS, str(contacts))
    require(cm, ["lead_id"], CONTACT_FIELDS)
    if cm.source("created_at") is None:
        raise ImportFailed(f"{contacts}: no create-date column (one of: {', '.join(CONTACT_FIELDS['created_at'])})")
    files, notes = [cm], list[str]()
    leads, stages, acts, props = _contacts_to_tables(frame, cm, notes)
    stages = attach_reasons(stages, column(frame, cm, "reason"), leads["lead_id"], settings, notes)
    several = _first_id(column(frame, cm, "account_id"))[1]
    if several:
        notes.append(f"{several} contacts are associated with several companies: linked to the first listed")
    accounts = _accounts(frame, cm, leads, Path(companies) if companies else None, files, notes)
    opps = _deals(Path(deals), files, notes) if deals else None
    tables = {"leads": leads, "stage_changes": stages, "activities": acts}
    if accounts is not None:
        tables["accounts"] = accounts
    if opps is not None:
        tables["opportunities"] = opps
    ts_cols = [leads["created_at"], stages["changed_at"], acts["occurred_at"]]
    if opps is not None:
        ts_cols += [opps["created_at"], opps["closed_at"]]
    cut = default_cutoff(ts_cols) if cutoff is None else parse_cutoff(cutoff)
    teams = owner_team_map(column(frame, cm, "owner"), column(frame, cm, "team"))
    report = write_and_validate(
        tables, out_dir, settings, cut,
        {"imported_from": "hubspot", "files": [m.file for m in files], "owner_teams": teams}, props
    )
    counts = {name: len(t) for name, t in tables.items()}
    return ImportReport("hubspot", Path(out_dir), files, notes, report, counts)
