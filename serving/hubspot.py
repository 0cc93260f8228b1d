"""HubSpot webhooks v3 events → our events (contact creation, property changes, lifecycle stages).

Pure functions like :mod:`leadscore.serving.wire` (which holds the v3 signature check): a JSON array
in, valid events and per-index errors out. A bad event (an id breaking the id rule, an ``occurredAt``
of 1e20 or NaN, a time outside the request's window) is reported by index; the others are kept.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from functools import partial
from typing import Any

from pydantic import ValidationError

from leadscore.serving.schemas import STORABLE, LeadProperties
from leadscore.serving.wire import (
    Context,
    Event,
    ItemError,
    LeadUpsert,
    Parsed,
    StageChangeIn,
    WireError,
    check_id,
    parse_time,
    str_or_none,
    validation_field,
)

#: HubSpot's internal lifecycle stage values → our stages.
HUBSPOT_STAGES: dict[str, str] = {
    "subscriber": "subscriber",
    "lead": "lead",
    "marketingqualifiedlead": "mql",
    "salesqualifiedlead": "sql",
    "opportunity": "opportunity",
    "customer": "customer",
    "evangelist": "customer",
}

_HUBSPOT_PROPS = {
    "jobtitle": "job_title",
    "country": "country",
    "hs_analytics_source": "source",
    "associatedcompanyid": "account_id",
    "hs_seniority": "seniority",
    "createdate": "created_at",
}


def _hubspot_time(value: Any, where: str, context: Context) -> datetime:
    """HubSpot times are milliseconds since the epoch (a number or digits); ISO text is accepted too.

    A number outside what a timestamp can hold (1e20, NaN, Infinity) is an item error, not an
    overflow: it is checked against the storable range before any conversion.
    """
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip()) if len(value.strip()) < 20 else float("inf")
    if isinstance(value, int | float) and not isinstance(value, bool):
        lo, hi = (t.timestamp() * 1000.0 for t in STORABLE)
        if not (math.isfinite(value) and lo <= value <= hi):
            raise ItemError(where, f"{value!r} is not a time in milliseconds since the epoch")
        value = datetime.fromtimestamp(value / 1000.0, tz=UTC)
    return parse_time(value, where, context)


def parse_hubspot_event(event: Any, stages: Iterable[str], context: Context = None) -> list[Event] | None:
    """One webhook v3 event → events; ``None`` for subscriptions we do not use."""
    if not isinstance(event, Mapping):
        raise ItemError("", "an event must be a JSON object")
    sub = event.get("subscriptionType")
    if not isinstance(sub, str):
        raise ItemError("subscriptionType", "missing or not a string")
    if sub not in ("contact.creation", "contact.propertyChange"):
        return None
    object_id = event.get("objectId")
    if object_id in (None, ""):
        raise ItemError("objectId", "missing")
    lead_id = check_id(object_id, "objectId")
    if event.get("occurredAt") is None:
        raise ItemError("occurredAt", "missing")
    at = _hubspot_time(event["occurredAt"], "occurredAt", context)
    if sub == "contact.creation":
        return [LeadUpsert(lead_id=lead_id, props=LeadProperties(created_at=at), account=None, at=at)]
    name = event.get("propertyName")
    if not isinstance(name, str):
        raise ItemError("propertyName", "missing or not a string")
    value = event.get("propertyValue")
    if name == "lifecyclestage":
        raw = str(value or "").strip().lower()
        known = set(stages)
        stage = HUBSPOT_STAGES.get(raw, raw if raw in known else None)
        if stage is None:
            raise ItemError("propertyValue", f"unknown lifecycle stage {value!r}")
        set_by = "import" if str(event.get("changeSource", "")).upper() in ("IMPORT", "MIGRATION") else "sales"
        upsert = LeadUpsert(lead_id=lead_id, props=LeadProperties(), account=None, at=at)
        return [upsert, StageChangeIn(lead_id=lead_id, stage=stage, at=at, set_by=set_by)]
    if name == "email":
        props: dict[str, Any] = {}
        if isinstance(value, str) and "@" in value:
            props["email_domain"] = value.rsplit("@", 1)[1].lower()
    elif name in _HUBSPOT_PROPS:
        ours = _HUBSPOT_PROPS[name]
        props = {ours: _hubspot_time(value, "propertyValue", context) if ours == "created_at" else str_or_none(value)}
    else:
        return None
    try:
        lead = LeadProperties.model_validate(props, context=context)
    except ValidationError as exc:
        raise ItemError("propertyValue", validation_field(exc)[1]) from None
    return [LeadUpsert(lead_id=lead_id, props=lead, account=None, at=at)]


def parse_hubspot_events(body: Any, stages: Iterable[str], context: Context = None) -> Parsed:
    if not isinstance(body, list):
        raise WireError(400, "body must be a JSON array of webhook events", "body")
    out = Parsed()
    stage_list = list(stages)
    for i, event in enumerate(body):
        out.add(i, f"[{i}]", partial(parse_hubspot_event, event, stage_list, context))
    return out
