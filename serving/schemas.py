"""Request and answer shapes of the scoring API (pydantic; they are the published OpenAPI schema).

Inputs are strict on purpose: a field name the API does not know (``occured_at``) is an error that
names the field, instead of being silently ignored while the activity is stored without a time.
Free-form data goes into ``properties``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

Id = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)]
ActivityId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=256)]
Text = Annotated[str, StringConstraints(max_length=1000)]


def _utc(value: datetime) -> datetime:
    """Naive timestamps are read as UTC (the CRM contract is UTC everywhere)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LeadProperties(_Strict):
    """Lead attributes the CRM knows; any subset may be sent, unsent fields keep their stored value."""

    account_id: Id | None = None
    email_domain: Text | None = None
    job_title: Text | None = None
    seniority: Text | None = None
    department: Text | None = None
    country: Text | None = None
    source: Text | None = None
    created_at: UtcDatetime | None = None


class AccountProperties(_Strict):
    """Account (company) attributes; ``account_id`` is required to attach them to something."""

    account_id: Id
    name: Text | None = None
    domain: Text | None = None
    industry: Text | None = None
    employees: Annotated[int, Field(ge=0)] | None = None
    annual_revenue: Annotated[float, Field(ge=0)] | None = None
    country: Text | None = None
    created_at: UtcDatetime | None = None


class ActivityIn(_Strict):
    """One activity as the CRM reports it; ``activity_id`` is the idempotency key."""

    activity_id: ActivityId
    lead_id: Id
    occurred_at: UtcDatetime
    type: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
    properties: dict[str, Any] | None = None
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


class ScoreActivity(_Strict):
    """An activity in a stateless score request; ids are optional because nothing is stored."""

    activity_id: ActivityId | None = None
    occurred_at: UtcDatetime
    type: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
    properties: dict[str, Any] | None = None


class ScoreLead(LeadProperties):
    lead_id: Id


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
