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
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationInfo,
    create_model,
)

from leadscore.tables import ACCOUNTS, ACTIVITIES, LEADS, TEXT_LIMIT, Column, TableSpec
from leadscore.training.trend import Trend

#: Timestamps every store and frame can hold (pandas' nanosecond range is 1677-09-21 to 2262-04-11);
#: the window a request is held to (``serving.time_window``) lies inside it.
STORABLE = (datetime(1678, 1, 1, tzinfo=UTC), datetime(2262, 1, 1, tzinfo=UTC))
#: key of the validation context holding the request's (earliest, latest) timestamp window
WINDOW = "time_window"
#: the largest integer a SQL INTEGER column (SQLite, PostgreSQL BIGINT) holds
INT64_MAX = 2**63 - 1


def validation_context(window: tuple[datetime, datetime]) -> dict[str, Any]:
    """The pydantic ``context=`` that holds every timestamp of a request to ``window``."""
    return {WINDOW: window}


def _utc(value: datetime, info: ValidationInfo) -> datetime:
    """Naive timestamps are read as UTC (the CRM contract is UTC everywhere); the value must lie in
    the request's window (``context[WINDOW]``), or at least in what a store can hold.

    A year-2999 or year-1500 timestamp is a 4xx naming its field here, not an overflow deep in
    pandas (a 500 that used to sink the whole batch).
    """
    try:
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValueError("timestamp out of range") from None
    lo, hi = (info.context or {}).get(WINDOW, STORABLE)
    if not lo <= value <= hi:
        raise ValueError(f"timestamp {value.isoformat()} is outside the accepted window "
                         f"{lo.isoformat()} .. {hi.isoformat()}")
    return value


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]


def _not_bool(value: Any) -> Any:
    """JSON ``true`` is not the number 1: refuse it before pydantic's lax mode converts it."""
    if isinstance(value, bool):
        raise ValueError("must be a number, not a boolean")
    return value


def parse_timestamp(value: Any, context: dict[str, Any] | None = None) -> datetime:
    """One timestamp validated as a request field is (wire formats that read times by hand)."""
    return _TIMESTAMP.validate_python(value, context=context)


_TIMESTAMP: TypeAdapter[datetime] = TypeAdapter(UtcDatetime)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def field_type(column: Column) -> Any:
    """The request type of a column, with the constraints its spec declares.

    Ids and required text are stripped and must not be blank (history files treat blanks as empty)
    and follow the one id rule (``ID_PATTERN``, ``ID_LENGTH``); optional free text is capped at
    ``TEXT_LIMIT``; numbers are finite, integers fit 64 bits, and neither is a boolean; timestamps
    lie in the request's window. Text with a lone UTF-16 surrogate is refused by pydantic itself.
    """
    kind = column.kind
    if kind == "ts":
        return UtcDatetime
    if kind == "json":
        return dict[str, Any]
    if kind == "bool":
        return bool
    if kind == "int":  # what a BIGINT holds; never a boolean
        return Annotated[int, BeforeValidator(_not_bool), Field(ge=column.ge, le=INT64_MAX)]
    if kind == "float":  # finite (JSON parsers accept Infinity and NaN); never a boolean
        return Annotated[float, BeforeValidator(_not_bool), Field(ge=column.ge, allow_inf_nan=False)]
    if column.choices and kind == "str":  # a closed vocabulary (an activity's actor): named in the schema
        return Literal[tuple(column.choices)]
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

    activities: list[Any] = Field(
        description="Items with the shape of ActivityIn; each is validated on its own and an invalid one "
                    "(of any shape) is reported by index while the others are stored.",
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
    trend: Trend = Field(description="P(SQL) over the lead's last scores (this one and up to 4 previous, one step "
                                     "per score): improving or declining when the least-squares slope exceeds one "
                                     "percentage point per score either way, else steady; new without a previous "
                                     "score (leadscore.training.trend).")
    changes: list[str] = Field(description="Reasons gained since the lead's previous score (\"New: ...\"), then "
                                           "those lost (\"Gone: ...\"); empty for a new lead.")
    band: str | None = Field(default=None, pattern=r"^[ABC][123]$",
                             description="Fit/engagement grid (HubSpot's A1-C3): fit band A (best) to C from the "
                                         "model's summed contributions of the lead's fit features, engagement band 1 "
                                         "(most engaged) to 3 from its interest features, each cut at the terciles "
                                         "of the training rows (leadscore.training.bands); null for a model "
                                         "without cut points or a score stored before bands existed.")


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


class ScorePage(BaseModel):
    """One page of a lead's score history, newest first (``GET /leads/{id}/scores``)."""

    lead_id: str
    scores: list[ScoreOut]
    next_cursor: str | None = Field(description="Pass as ``cursor`` for the next (older) page; null on the last.")


Role = Literal["decision_maker", "influencer", "user"]


class AccountLead(BaseModel):
    """One open lead of an account as the account view counts it."""

    lead_id: str
    role: Role = Field(description="Buying-group role from seniority and department (leadscore.training.account_score).")
    p_opportunity: float | None = Field(description="The lead's latest calibrated P(opportunity) at or before as_of; "
                                                    "null when the service has not scored it.")
    scored_at: datetime | None = Field(description="The moment of that latest score.")
    band: str | None = Field(default=None, description="The fit/engagement band of that score (A1-C3).")
    engaged: bool = Field(description="An activity of the lead's own (not a sales touch) in the 30 days to as_of.")


class RoleCoverage(BaseModel):
    leads: int = Field(description="Open leads of the account in this role.")
    engaged: int = Field(description="Of them, engaged in the 30 days to as_of.")


class AccountOut(BaseModel):
    """The account view (``GET /accounts/{id}``): account score and buying-group coverage."""

    account_id: str
    as_of: datetime = Field(description="The moment the view describes, UTC.")
    p_account: float = Field(description="P(an opportunity at the account within the opportunity horizon): noisy-OR "
                                         "1 - prod(1 - p_i) of its open leads' latest calibrated P(opportunity).")
    best_lead_p_opportunity: float = Field(description="The highest P(opportunity) of a single open lead.")
    open_leads: int = Field(description="Leads of the account not closed (customer, disqualified) at as_of.")
    scored_leads: int = Field(description="Open leads with a score at or before as_of (what p_account reads).")
    roles_engaged: list[Role] = Field(description="Roles with at least one engaged lead.")
    buying_group: dict[str, RoleCoverage] = Field(description="Per role (decision_maker, influencer, user): leads and "
                                                              "engaged leads.")
    leads: list[AccountLead]


class ErrorOut(BaseModel):
    """The one error body of every route and status (4xx, and the 500 that should never happen)."""

    error: str = Field(description="What is wrong, in words.")
    field: str | None = Field(default=None, description="The request field at fault (dotted path, "
                              "``activities[2].occurred_at``), a header name, or ``body``.")
    code: str = Field(description="Machine-readable kind: invalid, unauthorized, payload_too_large, "
                      "not_found, unavailable, internal.")
    message: str = Field(description="``field: error`` (what Segment and RudderStack SDKs log).")
    errors: list[BadItem] | None = Field(default=None, description="Every bad item of a batch, by index.")


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


class SegmentMessage(BaseModel):
    """One message of a Segment/RudderStack batch (documentation: the route validates each by hand,
    so one bad message is reported by index instead of refusing the batch)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="identify, group, track or page; other types are ignored.")
    userId: str | None = Field(default=None, description="The lead id (or anonymousId); the id rule applies.")
    anonymousId: str | None = None
    messageId: str | None = Field(default=None, description="Idempotency key of track/page activities.")
    event: str | None = Field(default=None, description="track: the event name, mapped onto the catalogue.")
    groupId: str | None = Field(default=None, description="group: the account id.")
    timestamp: str | None = Field(default=None, description="ISO 8601; in the accepted time window.")
    originalTimestamp: str | None = None
    properties: dict[str, Any] | None = None
    traits: dict[str, Any] | None = None
    context: dict[str, Any] | None = None


class SegmentBatch(BaseModel):
    """Body of ``POST /v1/batch`` (the Segment HTTP tracking API; RudderStack sends it gzipped)."""

    model_config = ConfigDict(extra="allow")

    batch: list[SegmentMessage]
    sentAt: str | None = Field(default=None, description="Time of messages without a timestamp.")
    writeKey: str | None = Field(default=None, description="A Segment write key, when not sent as the "
                                 "HTTP basic user; read only after the body size limit.")


class HubSpotEvent(BaseModel):
    """One HubSpot webhook v3 event (contact.creation, contact.propertyChange; others are ignored)."""

    model_config = ConfigDict(extra="allow")

    subscriptionType: str
    objectId: int | str = Field(description="The contact id, used as the lead id (the id rule applies).")
    occurredAt: int | str = Field(description="Milliseconds since the epoch; in the accepted time window.")
    propertyName: str | None = None
    propertyValue: Any = None
    changeSource: str | None = None
