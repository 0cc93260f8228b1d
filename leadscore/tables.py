"""The five CRM tables (ARCHITECTURE §1): their columns and the kind of each column.

This is the contract every importer writes and every reader relies on. Kinds drive parsing
(``id``/``str`` → string, ``ts`` → UTC timestamp, ``float``/``int`` → number, ``bool``, ``json``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["id", "str", "ts", "float", "int", "bool", "json"]


@dataclass(frozen=True)
class TableSpec:
    name: str
    key: tuple[str, ...]
    columns: dict[str, Kind]
    required: tuple[str, ...]
    #: columns that may be empty in a valid row (the rest, when present, must be filled)
    nullable: tuple[str, ...] = field(default=())

    @property
    def timestamp_columns(self) -> list[str]:
        return [c for c, k in self.columns.items() if k == "ts"]


ACCOUNTS = TableSpec(
    name="accounts",
    key=("account_id",),
    columns={
        "account_id": "id",
        "name": "str",
        "domain": "str",
        "industry": "str",
        "employees": "int",
        "annual_revenue": "float",
        "country": "str",
        "created_at": "ts",
    },
    required=("account_id", "created_at"),
    nullable=("name", "domain", "industry", "employees", "annual_revenue", "country"),
)

LEADS = TableSpec(
    name="leads",
    key=("lead_id",),
    columns={
        "lead_id": "id",
        "account_id": "id",
        "email_domain": "str",
        "job_title": "str",
        "seniority": "str",
        "department": "str",
        "country": "str",
        "source": "str",
        "created_at": "ts",
    },
    required=("lead_id", "created_at"),
    nullable=("account_id", "email_domain", "job_title", "seniority", "department", "country", "source"),
)

ACTIVITIES = TableSpec(
    name="activities",
    key=("activity_id",),
    columns={
        "activity_id": "id",
        "lead_id": "id",
        "occurred_at": "ts",
        "type": "str",
        "properties": "json",
    },
    required=("activity_id", "lead_id", "occurred_at", "type"),
    nullable=("properties",),
)

STAGE_CHANGES = TableSpec(
    name="stage_changes",
    key=("lead_id", "changed_at", "stage"),
    columns={"lead_id": "id", "stage": "str", "changed_at": "ts", "set_by": "str"},
    required=("lead_id", "stage", "changed_at"),
    nullable=(),
)

OPPORTUNITIES = TableSpec(
    name="opportunities",
    key=("opportunity_id",),
    columns={
        "opportunity_id": "id",
        "lead_id": "id",
        "account_id": "id",
        "created_at": "ts",
        "stage": "str",
        "amount": "float",
        "closed_at": "ts",
        "is_won": "bool",
    },
    required=("opportunity_id", "lead_id", "created_at"),
    nullable=("account_id", "stage", "amount", "closed_at", "is_won"),
)

TABLES: dict[str, TableSpec] = {
    t.name: t for t in (ACCOUNTS, LEADS, ACTIVITIES, STAGE_CHANGES, OPPORTUNITIES)
}
#: tables without which nothing can be scored
ESSENTIAL_TABLES = ("leads", "activities")
