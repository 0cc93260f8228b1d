"""CRM wire formats → our events: Segment/RudderStack batches and HubSpot webhooks v3, plus auth.

Pure functions: bytes and dicts in, validated events (or errors naming the field) out. The HTTP
layer decides what to store; keeping the mapping here means it is tested without a socket and the
same mapping serves every transport.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hmac
import re
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache, partial
from hashlib import sha256
from typing import Any

from pydantic import TypeAdapter, ValidationError

from leadscore.serving.schemas import (
    AccountProperties,
    ActivityIn,
    LeadProperties,
    field_type,
    parse_timestamp,
)
from leadscore.tables import ACCOUNTS, LEADS, TableSpec

#: validation context of a request (its timestamp window); see :func:`~leadscore.serving.schemas.validation_context`
Context = dict[str, Any] | None


class WireError(Exception):
    """A request-level problem (bad JSON, too large, bad auth): status, field and message."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


class ItemError(Exception):
    """One event of a batch is invalid; ``field`` is the path inside that event."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


@dataclass
class LeadUpsert:
    """Lead (and optionally account) properties learnt from the CRM at time ``at``."""

    lead_id: str
    props: LeadProperties
    account: AccountProperties | None
    at: datetime


@dataclass
class StageChangeIn:
    lead_id: str
    stage: str
    at: datetime
    set_by: str


Event = ActivityIn | LeadUpsert | StageChangeIn


@dataclass
class Parsed:
    """Valid events in arrival order, and the bad ones by index."""

    events: list[tuple[int, Event]] = field(default_factory=list)
    errors: list[tuple[int, str, str]] = field(default_factory=list)
    ignored: int = 0

    def add(self, i: int, where: str, parse: Callable[[], list[Event] | None]) -> None:
        """Item ``i`` (``where`` is its path, e.g. ``batch[3]``): its events kept, its error reported by index
        with the field inside it, or counted as ignored (a message type that carries nothing for us)."""
        try:
            events = parse()
        except ItemError as exc:
            self.errors.append((i, f"{where}.{exc.field}".rstrip("."), exc.message))
            return
        if events is None:
            self.ignored += 1
            return
        self.events.extend((i, e) for e in events)


# ---------------------------------------------------------------------------------------------- auth


def bearer_key(authorization: str | None) -> str | None:
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip() or None
    return None


def basic_user(authorization: str | None) -> str | None:
    """The user name of HTTP basic auth (Segment and RudderStack put the write key there)."""
    if not authorization or authorization[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.split(":", 1)[0] or None


def key_matches(candidate: object, keys: Iterable[str]) -> bool:
    """Constant-time membership, so response timing does not leak key prefixes."""
    if not isinstance(candidate, str) or not candidate:
        return False
    found = False
    for k in keys:
        found |= hmac.compare_digest(candidate.encode(), k.encode())
    return found


def hubspot_signature(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    """HubSpot v3: base64(HMAC-SHA256(client secret, method + URI + body + timestamp))."""
    message = method.upper().encode() + uri.encode() + body + timestamp.encode()
    return base64.b64encode(hmac.new(secret.encode(), message, sha256).digest()).decode()


def verify_hubspot(
    secret: str,
    method: str,
    uri: str,
    body: bytes,
    timestamp: str | None,
    signature: str | None,
    now: datetime,
    max_age_seconds: float = 300.0,
    future_skew_seconds: float = 5.0,
    check_signature: bool = True,
) -> None:
    """Raise a 401 :class:`WireError` unless the request is signed by HubSpot and fresh.

    The timestamp is part of the signed text, so checking its age stops replays of a captured request.
    ``check_signature=False`` checks only the headers' presence and the timestamp's age.
    """
    if not signature:
        raise WireError(401, "missing X-HubSpot-Signature-v3", "X-HubSpot-Signature-v3")
    if not timestamp:
        raise WireError(401, "missing X-HubSpot-Request-Timestamp", "X-HubSpot-Request-Timestamp")
    if not (timestamp.strip().isdigit() and len(timestamp.strip()) <= 15):  # 15 digits: year 33658
        raise WireError(401, "X-HubSpot-Request-Timestamp is not milliseconds since the epoch",
                        "X-HubSpot-Request-Timestamp")
    ts_ms = int(timestamp.strip())
    age = now.timestamp() - ts_ms / 1000.0
    if age > max_age_seconds:
        raise WireError(401, "request timestamp is older than 5 minutes", "X-HubSpot-Request-Timestamp")
    if age < -future_skew_seconds:
        raise WireError(401, "request timestamp is in the future", "X-HubSpot-Request-Timestamp")
    if not check_signature:  # the headers alone (before the body is read)
        return
    expected = hubspot_signature(secret, method, uri, body, timestamp)
    if not hmac.compare_digest(expected.encode(), signature.strip().encode()):
        raise WireError(401, "X-HubSpot-Signature-v3 does not match", "X-HubSpot-Signature-v3")


# ---------------------------------------------------------------------------------------------- bodies


def decode_body(raw: bytes, content_encoding: str | None, limit: int) -> bytes:
    """Undo gzip/deflate (RudderStack gzips every batch), never inflating past ``limit`` bytes."""
    enc = (content_encoding or "identity").strip().lower()
    if enc in ("identity", ""):
        return raw
    if enc not in ("gzip", "deflate", "x-gzip"):
        raise WireError(415, f"unsupported Content-Encoding {enc!r}", "Content-Encoding")
    wbits = 16 + zlib.MAX_WBITS if enc in ("gzip", "x-gzip") else zlib.MAX_WBITS
    try:
        d = zlib.decompressobj(wbits)
        out = d.decompress(raw, limit + 1)
        if len(out) > limit or d.unconsumed_tail:
            raise WireError(413, f"decompressed body exceeds {limit} bytes", "body")
        return out
    except (zlib.error, gzip.BadGzipFile) as exc:
        raise WireError(400, f"body is not valid {enc}: {exc}", "body") from exc


def validation_field(exc: ValidationError, prefix: str = "") -> tuple[str, str]:
    """The first error of a pydantic error as (dotted field path, message)."""
    err = exc.errors()[0]
    parts = [str(p) for p in err["loc"]]
    path = ".".join(p for p in [prefix, *parts] if p)
    return path or (prefix or "body"), str(err["msg"])


def all_validation_fields(exc: ValidationError, prefix: str = "") -> list[tuple[str, str]]:
    out = []
    for err in exc.errors():
        parts = [str(p) for p in err["loc"]]
        out.append((".".join(p for p in [prefix, *parts] if p) or prefix or "body", str(err["msg"])))
    return out


# ---------------------------------------------------------------------------------------------- Segment

_NON_WORD = re.compile(r"[^a-z0-9]+")

#: Segment event names (spec "Object Action" style) → our catalogue; matched after normalisation.
DEFAULT_EVENT_ALIASES: dict[str, str] = {
    "page_viewed": "page_view",
    "pricing_page_viewed": "pricing_page_view",
    "pricing_viewed": "pricing_page_view",
    "email_opened": "email_open",
    "email_link_clicked": "email_click",
    "email_clicked": "email_click",
    "form_submitted": "form_submit",
    "content_downloaded": "content_download",
    "webinar_attended": "webinar_attended",
    "demo_requested": "demo_request",
    "trial_started": "trial_signup",
    "trial_signed_up": "trial_signup",
    "signed_up": "trial_signup",
    "meeting_booked": "meeting_booked",
    "meeting_scheduled": "meeting_booked",
    "unsubscribed": "unsubscribe",
    "email_unsubscribed": "unsubscribe",
    "email_bounced": "email_bounce",
}


def normalise_event_name(name: str, catalogue: Iterable[str], aliases: Mapping[str, str]) -> str:
    """``"Demo Requested"`` → ``demo_request``; unknown names → the raw normalised word.

    The store maps unknown types to ``other`` (and keeps the original name in the properties).
    """
    key = _NON_WORD.sub("_", name.strip().lower()).strip("_")
    if key in set(catalogue):
        return key
    return aliases.get(key, key)


def str_or_none(v: Any) -> Any:
    if isinstance(v, int | float) and not isinstance(v, bool):
        return str(v)
    return v


#: Segment/RudderStack trait names for our columns, besides the column's own name (tried first).
TRAIT_ALIASES: dict[str, tuple[str, ...]] = {
    "job_title": ("title", "jobTitle"),
    "source": ("lead_source", "leadSource"),
    "account_id": ("accountId", "company_id", "companyId"),
    "created_at": ("createdAt",),
    "employees": ("employee_count",),
    "annual_revenue": ("annualRevenue",),
    "domain": ("website",),
}


def _pick(traits: Mapping[str, Any], spec: TableSpec) -> dict[str, Any]:
    """The spec's CRM columns found in ``traits`` (by name or alias): a new column needs no edit here."""
    out: dict[str, Any] = {}
    for column in spec.fields:
        if column.store_only or column.name in spec.key:
            continue
        for key in (column.name, *TRAIT_ALIASES.get(column.name, ())):
            if traits.get(key) is not None:
                value = traits[key]
                out[column.name] = str_or_none(value) if column.kind in ("id", "str") else value
                break
    return out


def traits_to_props(traits: Mapping[str, Any], where: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Segment traits (reserved + ours) → lead properties and optional account properties."""
    lead: dict[str, Any] = {}
    account: dict[str, Any] | None = None
    email = traits.get("email")
    if isinstance(email, str) and "@" in email:
        lead["email_domain"] = email.rsplit("@", 1)[1].strip().lower()
    lead.update(_pick(traits, LEADS))
    address = traits.get("address")
    if "country" not in lead and isinstance(address, Mapping) and address.get("country"):
        lead["country"] = address["country"]
    company = traits.get("company")
    if isinstance(company, Mapping) and company.get("id") is not None:
        account = {"account_id": str_or_none(company.get("id")), **_pick(company, ACCOUNTS)}
        lead.setdefault("account_id", account["account_id"])
    return lead, account


def group_traits_to_account(group_id: str, traits: Mapping[str, Any]) -> dict[str, Any]:
    return {"account_id": group_id, **_pick(traits, ACCOUNTS)}


def _segment_time(msg: Mapping[str, Any], sent_at: Any) -> Any:
    for key in ("timestamp", "originalTimestamp"):
        if msg.get(key) is not None:
            return msg[key], key
    if sent_at is not None:
        return sent_at, "sentAt"
    raise ItemError("timestamp", "missing: a message needs timestamp, originalTimestamp or a batch sentAt")


def parse_time(value: Any, where: str, context: Context) -> datetime:
    try:
        return parse_timestamp(value, context)
    except ValidationError as exc:
        message = str(exc.errors()[0]["msg"])
        raise ItemError(where, f"invalid timestamp {str(value)[:64]!r}: {message}") from None


@cache
def _id_adapter() -> TypeAdapter[str]:
    return TypeAdapter(field_type(LEADS.column("lead_id")))


def check_id(value: Any, where: str) -> str:
    """``value`` as an id under the one id rule of :mod:`leadscore.tables` (numbers become text)."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ItemError(where, "must be a string")
    try:
        return _id_adapter().validate_python(str(value))
    except ValidationError as exc:
        raise ItemError(where, str(exc.errors()[0]["msg"])) from None


def parse_segment_message(
    msg: Any, sent_at: Any, catalogue: Iterable[str], aliases: Mapping[str, str], context: Context = None
) -> list[Event] | None:
    """One Segment message → events (``None`` when the type carries nothing we score on)."""
    if not isinstance(msg, Mapping):
        raise ItemError("", "a message must be a JSON object")
    mtype = msg.get("type")
    if not isinstance(mtype, str):
        raise ItemError("type", "missing or not a string")
    mtype = mtype.lower()
    if mtype not in ("identify", "track", "page", "group"):
        return None
    id_key = "userId" if msg.get("userId") not in (None, "") else "anonymousId"
    if msg.get(id_key) in (None, ""):
        raise ItemError("userId", "missing: a message needs userId or anonymousId")
    lead_id = check_id(msg[id_key], id_key)
    raw_time, time_key = _segment_time(msg, sent_at)
    at = parse_time(raw_time, time_key, context)
    raw_context = msg.get("context")
    msg_context: Mapping[str, Any] = raw_context if isinstance(raw_context, Mapping) else {}
    traits: dict[str, Any] = {}
    if isinstance(msg_context.get("traits"), Mapping):
        traits.update(msg_context["traits"])  # RudderStack puts identify traits here
    if mtype == "identify" and msg.get("traits") is not None:
        if not isinstance(msg["traits"], Mapping):
            raise ItemError("traits", "must be an object")
        traits.update(msg["traits"])
    lead_props, account_props = traits_to_props(traits, "traits")
    if mtype == "group":
        group_id = msg.get("groupId")
        if group_id in (None, ""):
            raise ItemError("groupId", "missing")
        raw_traits = msg.get("traits")
        group_traits: Mapping[str, Any] = raw_traits if isinstance(raw_traits, Mapping) else {}
        account_props = group_traits_to_account(str(group_id), group_traits)
        lead_props["account_id"] = str(group_id)
    try:
        lead = LeadProperties.model_validate(lead_props, context=context)
        account = AccountProperties.model_validate(account_props, context=context) if account_props else None
    except ValidationError as exc:
        path, message = validation_field(exc, "traits")
        raise ItemError(path, message) from None
    if mtype in ("identify", "group"):
        return [LeadUpsert(lead_id=lead_id, props=lead, account=account, at=at)]
    message_id = msg.get("messageId")
    if message_id in (None, ""):
        raise ItemError("messageId", "missing: it is the idempotency key of the activity")
    props = msg.get("properties") if msg.get("properties") is not None else {}
    if not isinstance(props, Mapping):
        raise ItemError("properties", "must be an object")
    if mtype == "track":
        event = msg.get("event")
        if not isinstance(event, str) or not event.strip():
            raise ItemError("event", "missing or not a string")
        activity_type = normalise_event_name(event, catalogue, aliases)
        props = {**props, "event": event}
    else:
        where = " ".join(str(props.get(k) or "") for k in ("path", "url")) + " " + str(msg.get("name") or "")
        activity_type = "pricing_page_view" if "pricing" in where.lower() else "page_view"
    has_lead_data = bool(lead.model_dump(exclude_none=True)) or account is not None
    try:
        activity = ActivityIn.model_validate({
            "activity_id": str_or_none(message_id),
            "lead_id": lead_id,
            "occurred_at": at,
            "type": activity_type,
            "properties": dict(props),
            "lead": lead if has_lead_data else None,
            "account": account,
        }, context=context)
    except ValidationError as exc:
        path, message = validation_field(exc)
        raise ItemError("messageId" if path == "activity_id" else path, message) from None
    return [activity]


def parse_segment_batch(
    body: Any, catalogue: Iterable[str], aliases: Mapping[str, str], max_event_bytes: int, sizes: list[int],
    context: Context = None,
) -> Parsed:
    """A ``/v1/batch`` body → valid events and per-index errors (``sizes``: bytes per message)."""
    if not isinstance(body, Mapping) or not isinstance(body.get("batch"), list):
        raise WireError(400, "body must be an object with a 'batch' array", "batch")
    out = Parsed()
    sent_at = body.get("sentAt")
    for i, msg in enumerate(body["batch"]):
        if sizes[i] > max_event_bytes:
            out.errors.append((i, f"batch[{i}]", f"message is {sizes[i]} bytes; the limit is {max_event_bytes}"))
            continue
        out.add(i, f"batch[{i}]", partial(parse_segment_message, msg, sent_at, catalogue, aliases, context))
    return out
