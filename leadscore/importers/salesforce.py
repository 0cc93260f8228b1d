"""Salesforce exports (Lead, LeadHistory, Opportunity, optional Account CSV) → the five CRM tables.

What becomes what, and why:

* Lead → ``leads``. Every lead gets a ``lead`` stage change at its CreatedDate: that is the one
  stage fact known at creation. The *current* Status is not dated, so it is never back-dated to the
  creation (that would tell the model the outcome at the first scoring moment); it is kept in
  ``lead_properties.parquet`` and reported.
* LeadHistory rows with ``Field = Status`` → ``stage_changes`` at their CreatedDate, through a mapping
  of Salesforce statuses to our stages (:data:`DEFAULT_STATUS_MAP`, overridable with a YAML file;
  unmapped statuses are reported and produce no stage change).
* ConvertedDate → ``opportunity`` when the lead converted into an opportunity, else ``sql``.
* Opportunity → ``opportunities``, linked to its lead through ``Lead.ConvertedOpportunityId`` (or a
  ``LeadId`` column when the export has one). ``closed_at`` only for closed opportunities, since the
  CloseDate of an open one is an expected date.
* Accounts come from the Account export when given; leads whose company is not in it get an account
  built from the lead's company fields (id = ConvertedAccountId, else ``company:<name>``; created_at =
  earliest CreatedDate of its leads).
* Salesforce keeps no dated web/email activity on the Lead object. Campaign responses are the dated
  marketing events it does keep: a CampaignMember export (``--campaign-members``) becomes
  ``activities`` — one per response, at FirstRespondedDate, typed from the campaign type
  (:data:`CAMPAIGN_TYPES`, else ``other``). Members who never responded are not activities (being
  added to a campaign list is something marketing did, not the lead). Without it ``activities`` is
  empty and the report says the history cannot be scored from events.
"""

from __future__ import annotations

import re
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
    read_export,
    require,
    write_and_validate,
)
from leadscore.importers.hubspot import _clean_domain, _earliest_text
from leadscore.importers.sla_fields import attach_reasons, dated_activities, owner_team_map
from leadscore.tables import text_dtype

if TYPE_CHECKING:
    import pandas as pd

    from leadscore.config import Settings

LEAD_FIELDS: dict[str, list[str]] = {
    "lead_id": ["Id", "Lead ID", "LeadId"],
    "created_at": ["CreatedDate", "Created Date"],
    "status": ["Status", "Lead Status"],
    "is_converted": ["IsConverted", "Converted"],
    "converted_date": ["ConvertedDate", "Converted Date"],
    "converted_opportunity_id": ["ConvertedOpportunityId", "Converted Opportunity ID", "Converted Opportunity"],
    "converted_account_id": ["ConvertedAccountId", "Converted Account ID", "Converted Account"],
    "job_title": ["Title", "Job Title"],
    "company": ["Company", "Company / Account"],
    "industry": ["Industry"],
    "employees": ["NumberOfEmployees", "No. of Employees", "Number of Employees", "Employees"],
    "annual_revenue": ["AnnualRevenue", "Annual Revenue"],
    "source": ["LeadSource", "Lead Source"],
    "email": ["Email"],
    "country": ["Country", "Country Code", "CountryCode"],
    "website": ["Website"],
    "rating": ["Rating"],
    "owner": ["Owner Name", "Lead Owner", "OwnerId", "Owner ID", "Owner"],
    "team": ["Owner Role", "Owner Role Name", "Owner: Role", "Owner Role: Name"],
    "reason": ["Unqualified Reason", "Disqualified Reason", "Disqualification Reason", "Reason Unqualified",
               "Status Reason", "Rejection Reason"],
    "last_activity": ["LastActivityDate", "Last Activity", "Last Activity Date"],
    "last_transfer": ["LastTransferDate", "Last Transfer Date"],
}
#: dated Lead columns → (activity type, actor): both are what sales did (a task or event, a hand-over)
SLA_EVENT_COLUMNS = {"last_activity": ("sales_touch", "sales"), "last_transfer": ("owner_assigned", "sales")}

HISTORY_FIELDS: dict[str, list[str]] = {
    "lead_id": ["LeadId", "Lead ID"],
    "field": ["Field", "Field / Event"],
    "old_value": ["OldValue", "Old Value"],
    "new_value": ["NewValue", "New Value"],
    "changed_at": ["CreatedDate", "Created Date", "Edit Date"],
}

OPPORTUNITY_FIELDS: dict[str, list[str]] = {
    "opportunity_id": ["Id", "Opportunity ID"],
    "lead_id": ["LeadId", "Lead ID", "Converted Lead ID"],
    "account_id": ["AccountId", "Account ID"],
    "created_at": ["CreatedDate", "Created Date"],
    "stage": ["StageName", "Stage"],
    "amount": ["Amount"],
    "closed_at": ["CloseDate", "Close Date"],
    "is_won": ["IsWon", "Won"],
    "is_closed": ["IsClosed", "Closed"],
}

ACCOUNT_FIELDS: dict[str, list[str]] = {
    "account_id": ["Id", "Account ID"],
    "name": ["Name", "Account Name"],
    "domain": ["Website"],
    "industry": ["Industry"],
    "employees": ["NumberOfEmployees", "Employees"],
    "annual_revenue": ["AnnualRevenue", "Annual Revenue"],
    "country": ["BillingCountry", "Billing Country", "Country"],
    "created_at": ["CreatedDate", "Created Date"],
}

CAMPAIGN_MEMBER_FIELDS: dict[str, list[str]] = {
    "member_id": ["Id", "Campaign Member ID"],
    "lead_id": ["LeadId", "Lead ID"],
    "campaign_id": ["CampaignId", "Campaign ID"],
    "campaign_type": ["Campaign Type", "CampaignType", "Campaign.Type", "Type"],
    "status": ["Status", "Member Status"],
    "has_responded": ["HasResponded", "Responded"],
    "responded_at": ["FirstRespondedDate", "First Responded Date"],
}

#: Salesforce campaign type (lower case, substring) → activity type; first match wins.
CAMPAIGN_TYPES: list[tuple[str, str]] = [
    ("webinar", "webinar_attended"),
    ("email", "email_click"),
    ("content", "content_download"),
    ("whitepaper", "content_download"),
    ("demo", "demo_request"),
    ("trial", "trial_signup"),
    ("web", "form_submit"),
    ("form", "form_submit"),
]

#: Salesforce lead status (normalised: lower case, single spaces) → our stage. The standard picklist
#: first, then common custom values. "Working" means a rep works the lead, i.e. marketing handed it
#: over: ``mql``; "Closed - Converted" means sales accepted it: ``sql``.
DEFAULT_STATUS_MAP: dict[str, str] = {
    "open - not contacted": "lead",
    "working - contacted": "mql",
    "closed - converted": "sql",
    "closed - not converted": "disqualified",
    "new": "lead",
    "open": "lead",
    "working": "mql",
    "contacted": "mql",
    "marketing qualified": "mql",
    "mql": "mql",
    "sales accepted": "sql",
    "sal": "sql",
    "sales qualified": "sql",
    "sql": "sql",
    "qualified": "sql",
    "converted": "sql",
    "nurturing": "recycled",
    "nurture": "recycled",
    "recycled": "recycled",
    "unqualified": "disqualified",
    "disqualified": "disqualified",
}


def _norm_status(value: object) -> str:
    return re.sub(r"\s+", " ", str(value).strip().lower())


def load_status_map(path: Path | str | None, settings: Settings) -> dict[str, str]:
    """The default status map updated by a YAML mapping ``{Salesforce status: stage}``.

    Stages are checked against the configured stages so a typo stops here, naming the entry.
    """
    import yaml

    mapping = dict(DEFAULT_STATUS_MAP)
    if path is None:
        return mapping
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ImportFailed(f"{path}: expected a mapping of Salesforce status to stage")
    data = data.get("status_map", data)
    for status, stage in data.items():
        if stage not in settings.stages.all:
            raise ImportFailed(f"{path}: status {status!r} maps to unknown stage {stage!r} "
                               f"(stages: {', '.join(settings.stages.all)})")
        mapping[_norm_status(status)] = str(stage)
    return mapping


def _accounts(
    leads_raw: pd.DataFrame, lm: ColumnMatch, created: pd.Series, accounts_path: Path | None,
    files: list[ColumnMatch], notes: list[str],
) -> tuple[pd.DataFrame, pd.Series]:
    """Accounts table and each lead's account id (see the module docstring for the rule)."""
    import pandas as pd

    company = column(leads_raw, lm, "company")
    key = column(leads_raw, lm, "converted_account_id").fillna("company:" + company.str.lower().str.strip())
    built = pd.DataFrame(
        {
            "account_id": key,
            "name": company,
            "domain": _clean_domain(column(leads_raw, lm, "website")),
            "industry": column(leads_raw, lm, "industry"),
            "employees": column(leads_raw, lm, "employees"),
            "annual_revenue": column(leads_raw, lm, "annual_revenue"),
            "country": column(leads_raw, lm, "country"),
        }
    ).dropna(subset=["account_id"])
    built = built.groupby("account_id", sort=False).first().reset_index()
    built["created_at"] = built["account_id"].map(_earliest_text(created, key)).astype(text_dtype())
    if accounts_path is None:
        notes.append(f"no Account export: {len(built)} accounts built from the leads' company fields")
        return built, key
    raw = read_export(accounts_path, "Salesforce Account")
    am = match_columns(list(raw.columns), ACCOUNT_FIELDS, str(accounts_path))
    require(am, ["account_id"], ACCOUNT_FIELDS)
    files.append(am)
    exported = pd.DataFrame({f: column(raw, am, f) for f in ACCOUNT_FIELDS})
    exported["domain"] = _clean_domain(exported["domain"])
    extra = built[~built["account_id"].isin(set(exported["account_id"].dropna()))]
    if len(extra):
        notes.append(f"{len(extra)} lead companies not in the Account export: accounts built from the lead fields")
    return pd.concat([exported, extra], ignore_index=True), key


def _stage_changes(
    lead_id: pd.Series, created: pd.Series, leads_raw: pd.DataFrame, lm: ColumnMatch,
    history_path: Path | None, status_map: dict[str, str], files: list[ColumnMatch], notes: list[str],
) -> pd.DataFrame:
    import pandas as pd

    parts = [pd.DataFrame({"lead_id": lead_id, "stage": "lead", "changed_at": created})]
    converted_at = column(leads_raw, lm, "converted_date")
    opp = column(leads_raw, lm, "converted_opportunity_id")
    conv_stage = pd.Series("sql", index=leads_raw.index).where(opp.isna(), "opportunity")
    parts.append(pd.DataFrame({"lead_id": lead_id, "stage": conv_stage, "changed_at": converted_at}))
    if history_path is not None:
        hist = read_export(history_path, "Salesforce LeadHistory")
        hm = match_columns(list(hist.columns), HISTORY_FIELDS, str(history_path))
        require(hm, ["lead_id", "field", "new_value", "changed_at"], HISTORY_FIELDS)
        files.append(hm)
        field = column(hist, hm, "field").str.lower()
        is_status = field.isin(["status", "leadstatus"])
        other = field[~is_status].value_counts().to_dict()
        if other:
            notes.append(f"LeadHistory rows for fields other than Status ignored: {other}")
        new = column(hist, hm, "new_value")[is_status]
        stage = new.map(lambda v: status_map.get(_norm_status(v)) if isinstance(v, str) else None)
        unknown = new[stage.isna() & new.notna()].value_counts()
        if len(unknown):
            notes.append(
                f"{int(unknown.sum())} Status changes to statuses with no stage mapping produced no stage "
                f"change (add them with --status-map): {unknown.head(8).to_dict()}"
            )
        parts.append(
            pd.DataFrame(
                {
                    "lead_id": column(hist, hm, "lead_id")[is_status],
                    "stage": stage.astype(text_dtype()),
                    "changed_at": column(hist, hm, "changed_at")[is_status],
                }
            ).dropna(subset=["stage"])
        )
    elif lm.source("status"):
        notes.append("no LeadHistory export: status changes are undated, only creation and conversion "
                     "become stage changes (the current Status is kept in lead_properties)")
    stages = pd.concat(parts, ignore_index=True)
    stages = stages[stages["changed_at"].notna()]
    # The same fact reported twice (conversion and a "Closed - Converted" history row) counts once.
    stages = stages.drop_duplicates(["lead_id", "stage", "changed_at"]).reset_index(drop=True)
    stages["set_by"] = "import"
    return stages


def _opportunities(
    path: Path, leads_raw: pd.DataFrame, lm: ColumnMatch, lead_id: pd.Series, account_ids: set[str],
    files: list[ColumnMatch], notes: list[str],
) -> pd.DataFrame:
    import pandas as pd

    raw = read_export(path, "Salesforce Opportunity")
    om = match_columns(list(raw.columns), OPPORTUNITY_FIELDS, str(path))
    require(om, ["opportunity_id"], OPPORTUNITY_FIELDS)
    files.append(om)
    opp_id = column(raw, om, "opportunity_id")
    link = pd.Series(lead_id.to_numpy(), index=column(leads_raw, lm, "converted_opportunity_id").to_numpy())
    link = link[link.index.notna()]
    link = link[~link.index.duplicated()]
    lead = column(raw, om, "lead_id").fillna(opp_id.map(link)).astype(text_dtype())
    if lead.isna().any():
        notes.append(f"{int(lead.isna().sum())} opportunities are not the conversion of any imported lead: "
                     "rejected (an opportunity needs a lead)")
    account = column(raw, om, "account_id")
    orphan = account.notna() & ~account.isin(account_ids)
    if orphan.any():
        notes.append(f"{int(orphan.sum())} opportunities name an AccountId with no account: account_id left empty")
        account = account.where(~orphan)
    won = column(raw, om, "is_won")
    if om.source("is_closed"):
        closed = column(raw, om, "is_closed").str.lower().isin(["true", "1", "yes"])
    else:
        stage = column(raw, om, "stage").str.lower()
        closed = stage.str.startswith("closed", na=False)
    close_date = column(raw, om, "closed_at")
    open_dates = int((close_date.notna() & ~closed).sum())
    if open_dates:
        notes.append(f"{open_dates} open opportunities: their CloseDate is an expected date and is not imported")
    return pd.DataFrame(
        {
            "opportunity_id": opp_id,
            "lead_id": lead,
            "account_id": account,
            "created_at": column(raw, om, "created_at"),
            "stage": column(raw, om, "stage"),
            "amount": column(raw, om, "amount"),
            "closed_at": close_date.where(closed),
            "is_won": won.where(closed),
        }
    )


def _campaign_activities(path: Path, files: list[ColumnMatch], notes: list[str]) -> pd.DataFrame:
    """One activity per campaign response, at its FirstRespondedDate (see the module docstring)."""
    import json

    import pandas as pd

    raw = read_export(path, "Salesforce CampaignMember")
    cm = match_columns(list(raw.columns), CAMPAIGN_MEMBER_FIELDS, str(path))
    require(cm, ["lead_id", "responded_at"], CAMPAIGN_MEMBER_FIELDS)
    files.append(cm)
    responded_at = column(raw, cm, "responded_at")
    flag = column(raw, cm, "has_responded").str.lower()
    responded = responded_at.notna() & (flag.isna() | flag.isin(["true", "1", "yes"]))
    skipped = int((~responded).sum())
    if skipped:
        notes.append(f"{skipped} campaign members without a response are not activities")
    ctype = column(raw, cm, "campaign_type").str.lower()

    def kind(t: object) -> str:
        return next((a for key, a in CAMPAIGN_TYPES if isinstance(t, str) and key in t), "other")

    member = column(raw, cm, "member_id")
    campaign = column(raw, cm, "campaign_id")
    lead = column(raw, cm, "lead_id")
    key = member.fillna(campaign.fillna("?") + ":" + lead.fillna("?"))
    props = [
        json.dumps({"imported_from": "salesforce", "campaign_id": c, "campaign_type": t, "member_status": st},
                   default=str)
        for c, t, st in zip(campaign.fillna(""), column(raw, cm, "campaign_type").fillna(""),
                            column(raw, cm, "status").fillna(""), strict=True)
    ]
    acts = pd.DataFrame(
        {
            "activity_id": "salesforce:" + key,
            "lead_id": lead,
            "occurred_at": responded_at,
            "type": ctype.map(kind).astype(text_dtype()),
            "properties": pd.Series(props, index=raw.index, dtype=text_dtype()),
        }
    )
    return acts[responded].reset_index(drop=True)


def import_salesforce(
    leads: Path | str,
    out_dir: Path | str,
    settings: Settings,
    history: Path | str | None = None,
    opportunities: Path | str | None = None,
    accounts: Path | str | None = None,
    status_map: Path | str | None = None,
    cutoff: str | None = None,
    campaign_members: Path | str | None = None,
) -> ImportReport:
    """Map Salesforce exports onto the CRM tables in ``out_dir`` and validate them.

    Raises :class:`ImportFailed` when a file is missing or lacks its id column.
    """
    import pandas as pd

    statuses = load_status_map(status_map, settings)
    raw = read_export(leads, "Salesforce Lead")
    lm = match_columns(list(raw.columns), LEAD_FIELDS, str(leads))
    require(lm, ["lead_id", "created_at"], LEAD_FIELDS)
    files, notes = [lm], list[str]()
    lead_id = column(raw, lm, "lead_id")
    created = column(raw, lm, "created_at")
    acc_table, acc_key = _accounts(raw, lm, created, Path(accounts) if accounts else None, files, notes)
    lead_table = pd.DataFrame(
        {
            "lead_id": lead_id,
            "account_id": acc_key,
            "email_domain": email_domain(column(raw, lm, "email")),
            "job_title": column(raw, lm, "job_title"),
            "country": column(raw, lm, "country"),
            "source": column(raw, lm, "source"),
            "created_at": created,
            "owner": column(raw, lm, "owner"),
        }
    )
    stages = _stage_changes(lead_id, created, raw, lm, Path(history) if history else None, statuses, files, notes)
    stages = attach_reasons(stages, column(raw, lm, "reason"), lead_id, settings, notes)
    tables: dict[str, pd.DataFrame] = {"accounts": acc_table, "leads": lead_table, "stage_changes": stages}
    if campaign_members:
        tables["activities"] = _campaign_activities(Path(campaign_members), files, notes)
    else:
        tables["activities"] = pd.DataFrame(columns=["activity_id", "lead_id", "occurred_at", "type", "properties"])
        notes.append("no CampaignMember export: Salesforce Lead/LeadHistory hold no dated activity of the "
                     "lead, so its interest cannot be scored from events")
    sales = dated_activities(raw, lm, lead_id, SLA_EVENT_COLUMNS, "salesforce")
    if sales:
        touches = pd.concat(sales, ignore_index=True)
        touches.insert(0, "activity_id", "sf:" + touches["lead_id"].fillna("?") + ":" + touches["type"] + ":"
                       + touches["occurred_at"])
        tables["activities"] = pd.concat([tables["activities"], touches], ignore_index=True)
    if opportunities:
        tables["opportunities"] = _opportunities(
            Path(opportunities), raw, lm, lead_id, set(acc_table["account_id"].dropna()), files, notes
        )
    props_fields = [f for f in ("status", "is_converted", "rating") if lm.source(f)]
    props = pd.DataFrame({"lead_id": lead_id, **{f: column(raw, lm, f) for f in props_fields}})
    ts_cols = [created, stages["changed_at"], tables["activities"]["occurred_at"]]
    if "opportunities" in tables:
        ts_cols += [tables["opportunities"]["created_at"], tables["opportunities"]["closed_at"]]
    cut = default_cutoff(ts_cols) if cutoff is None else parse_cutoff(cutoff)
    teams = owner_team_map(column(raw, lm, "owner"), column(raw, lm, "team"))
    report = write_and_validate(
        tables, out_dir, settings, cut,
        {"imported_from": "salesforce", "files": [m.file for m in files], "owner_teams": teams}, props
    )
    counts = {name: len(t) for name, t in tables.items()}
    return ImportReport("salesforce", Path(out_dir), files, notes, report, counts)
