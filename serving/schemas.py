"""Request and answer shapes of the scoring API (pydantic; they are the published OpenAPI schema).

Inputs are strict on purpose: a field name the API does not know (``occured_at``) is an error that
names the field, instead of being silently ignored while the activity is stored without a time.
Free-form data goes into ``properties``.

The request models' CRM fields and their constraints (lengths, charsets, ranges) come from the table
specs of :mod:`leadscore.tables`, like the history validation and the store's columns: a column added
there is accepted here, validated the same way, with nothing to edit in this module.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, create_model

from leadscore.tables import ACCOUNTS, ACTIVITIES, LEADS, TEXT_LIMIT, Column, TableSpec


def _utc(value: datetime) -> datetime:
    """Naive timestamps are read as UTC (the CRM contract is UTC everywhere)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def field_type(column: Column) -> Any:
    """The request type of a column, with the constraints its spec declares.

    Ids and required text are stripped and must not be blank (history files treat blanks as empty);
    optional free text is capped at ``TEXT_LIMIT``; a JSON column is a JSON object.
    """
    kind = column.kind
    if kind == "ts":
        return UtcDatetime
    if kind == "json":
        return dict[str, Any]
    if kind == "bool":
        return bool
    if kind in ("int", "float"):
        number = int if kind == "int" else float
        return Annotated[number, Field(ge=column.ge)] if column.ge is not None else number  # type: ignore[valid-type]
    if kind == "id" or not column.nullable:
        return Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=column.max_length,
                                                pattern=column.pattern)]
    return Annotated[str, StringConstraints(max_length=column.max_length or TEXT_LIMIT)]


def spec_fields(spec: TableSpec, required: Iterable[str] = (), exclude: Iterable[str] = ()) -> dict[str, Any]:
    """``create_model`` fields for the CRM columns of ``spec``: ``required`` ones must be sent, the
    others default to None (the store keeps what it has)."""
    must, skip = set(required), set(exclude)
    fields: dict[str, Any] = {}
    for column in spec.fields:
        if column.store_only or column.name in skip:
            continue
        typ, doc = field_type(column), column.doc or None
        if column.name in must:
            fields[column.name] = (typ, Field(description=doc))
        else:
            fields[column.name] = (typ | None, Field(default=None, description=doc))
    return fields


def _model(name: str, spec: TableSpec, required: Iterable[str] = (), exclude: Iterable[str] = ()) -> Any:
    """The fields of a request model, as a base class (the public class adds docs and nested fields)."""
    return create_model(f"_{name}Fields", __base__=_Strict, **spec_fields(spec, required, exclude))


class LeadProperties(_model("LeadProperties", LEADS, exclude=("lead_id",))):  # type: ignore[misc]
    """Lead attributes the CRM knows; any subset may be sent, unsent fields keep their stored value."""


class AccountProperties(_model("AccountProperties", ACCOUNTS, required=("account_id",))):  # type: ignore[misc]
    """Account (company) attributes; ``account_id`` is required to attach them to something."""


class ActivityIn(_model("ActivityIn", ACTIVITIES, required=("activity_id", "lead_id", "occurred_at", "type"))):  # type: ignore[misc]
    """One activity as the CRM reports it; ``activity_id`` is the idempotency key."""

    lead: LeadProperties | None = Field(default=None, description="Optional lead properties to upsert.")
    account: AccountProperties | None = Field(default=None, description="Optional account properties to upsert.")


class ActivityBatch(_Strict):
    """Several activities at once; each is validated on its own (a bad one does not sink the rest)."""

    activities: list[dict[str, Any]] = Field(
        description="Items with the shape of ActivityIn; invalid items are reported by index."
    )


class Reasons(BaseModel):
    positive: list[str]
    negative: list[str]


class ScoreOut(BaseModel):
    """One score: calibrated probabilities, the recommended stage and why."""

    lead_id: str
    scored_at: datetime = Field(description="The moment scored (the activity's time), UTC.")
    p_sql: float = Field(description="Calibrated P(lead becomes SQL within the SQL horizon).")
    p_opportunity: float = Field(description="Calibrated P(opportunity within the opportunity horizon).")
    stage: str
    previous_stage: str | None
    reasons: Reasons
    model_version: str


class BadItem(BaseModel):
    index: int
    field: str
    error: str


class ActivitiesOut(BaseModel):
    stored: int = Field(description="New activities stored by this request.")
    duplicates: int = Field(description="Activities already stored (same activity_id), counted once.")
    rejected: int
    scores: list[ScoreOut]
    errors: list[BadItem]


class ScoreActivity(_model("ScoreActivity", ACTIVITIES, required=("occurred_at", "type"), exclude=("lead_id",))):  # type: ignore[misc]
    """An activity in a stateless score request; ids are optional because nothing is stored."""


class ScoreLead(_model("ScoreLead", LEADS, required=("lead_id",))):  # type: ignore[misc]
    """A lead of a stateless score request: its id and any of its properties."""


class ScoreRequest(_Strict):
    """A lead with its properties and activity history; scored at ``as_of`` (default: last activity)."""

    lead: ScoreLead
    account: AccountProperties | None = None
    activities: list[ScoreActivity] = Field(default_factory=list, max_length=20000)
    as_of: UtcDatetime | None = None
    previous_stage: str | None = None


class LeadOut(BaseModel):
    lead_id: str
    activities: int
    stage: str | None
    latest: ScoreOut | None
    history: list[ScoreOut]


class ErrorOut(BaseModel):
    error: str
    field: str | None = None
    errors: list[BadItem] | None = None


class BatchOut(BaseModel):
    """Answer to a Segment/RudderStack batch (200 so SDKs do not retry what was accepted)."""

    stored: int
    duplicates: int
    leads_updated: int
    ignored: int
    rejected: int
    errors: list[BadItem]


class HubSpotOut(BaseModel):
    processed: int
    stage_changes: int
    ignored: int
    rejected: int
    errors: list[BadItem]
