"""``leadscore sync hubspot``: push changed scores to HubSpot contacts through an outbox that never loses a batch.

The official ``hubspot-api-client`` sends ``POST /crm/v3/objects/contacts/batch/update`` (at most 100
contacts a call). Why the pieces:

* **Only changes.** A lead is sent when its recommended stage or score band differs from what HubSpot
  last accepted for it (:mod:`training.export`, target ``hubspot-api``), so a nightly run sends the few
  leads that moved, not the whole base.
* **Outbox.** Every batch is written to the event store's ``export_outbox`` before its first try and
  deleted only once HubSpot answered 2xx, after the leads are recorded as exported.
  A batch that still fails after the retries stays there, with its attempts and last error, and every
  later run sends the outbox first: a batch is never lost, whatever fails.
* **Retries.** urllib3's ``Retry`` inside the client: 429 and 5xx are retried with exponential
  backoff, a 429's ``Retry-After`` is honoured (slept before the next try), POST included.
* **Idempotent.** A batch update sets absolute property values, so a batch resent after a crash between
  HubSpot's 2xx and our commit writes the same values again; a second run with nothing changed sends
  nothing.
* **Token** from an environment variable (``HUBSPOT_ACCESS_TOKEN`` by default), never from a file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd
import sqlalchemy as sa

from leadscore.errors import LeadscoreError
from leadscore.serving.store_tables import export_outbox_t, to_micros
from leadscore.training.export import changed, hubspot_properties, last_exported, record_exported

if TYPE_CHECKING:
    from leadscore.serving.store import EventStore

TARGET = "hubspot-api"
TOKEN_ENV = "HUBSPOT_ACCESS_TOKEN"
#: HubSpot's limit of inputs per batch update
BATCH_SIZE = 100
RETRY_STATUSES = (429, 500, 502, 503, 504)


class SyncError(LeadscoreError):
    """The sync cannot start (no token); failed batches are not errors: they stay in the outbox."""


@dataclass(frozen=True)
class SyncSummary:
    queued: int  # new batches put in the outbox by this run
    sent: int  # batches HubSpot accepted (this run's and older ones)
    failed: int  # batches still in the outbox after this run
    contacts: int  # contacts updated
    errors: tuple[str, ...]


def hubspot_client(token: str, host: str | None = None, retries: int = 5, backoff: float = 0.5) -> Any:
    """The official client with retries on 429/5xx (``Retry-After`` honoured) and an optional host."""
    from hubspot import HubSpot
    from urllib3.util.retry import Retry

    retry = Retry(total=retries, backoff_factor=backoff, status_forcelist=RETRY_STATUSES, allowed_methods=None,
                  respect_retry_after_header=True, raise_on_status=False)
    extra = {"host": host.rstrip("/")} if host else {}
    return HubSpot(access_token=token, retry=retry, **extra)


def enqueue(store: EventStore, scores: pd.DataFrame, batch_size: int = BATCH_SIZE) -> int:
    """Put the changed leads of ``scores`` into the outbox as batches; returns the number of batches.

    A lead waiting in an older failed batch is queued again only if it changed since (a batch sets
    absolute values and batches are sent oldest first, so the newest values win).
    """
    known = last_exported(store, TARGET, scores["lead_id"])
    known.update(_pending(store))
    todo = changed(scores, known)
    if todo.empty:
        return 0
    props = hubspot_properties(todo)
    now = to_micros(pd.Timestamp.now(tz="UTC"))
    rows = []
    for start in range(0, len(todo), batch_size):
        part = todo.iloc[start : start + batch_size]
        payload = {"inputs": [{"id": str(lead), "properties": p}
                              for lead, p in zip(part["lead_id"], props[start : start + batch_size], strict=True)],
                   "exported": part[["lead_id", "stage", "p_sql"]].to_dict("list")}
        rows.append({"target": TARGET, "payload": json.dumps(payload), "created_at": now, "attempts": 0})
    with store.begin() as conn:
        conn.execute(sa.insert(export_outbox_t), rows)
    return len(rows)


def _pending(store: EventStore) -> dict[str, tuple[str, str]]:
    """``lead → (stage, band)`` waiting in the outbox (the newest batch wins): not queued again unchanged."""
    from leadscore.training.export import score_band

    out: dict[str, tuple[str, str]] = {}
    with store.read() as conn:
        for (text,) in conn.execute(sa.select(export_outbox_t.c.payload).where(export_outbox_t.c.target == TARGET)
                                    .order_by(export_outbox_t.c.id)):
            done = json.loads(text)["exported"]
            bands = score_band(done["p_sql"])
            out.update({lead: (stage, band) for lead, stage, band in zip(done["lead_id"], done["stage"], bands,
                                                                         strict=True)})
    return out


def _send(client: Any, payload: dict[str, Any]) -> None:
    from hubspot.crm.contacts import BatchInputSimplePublicObjectBatchInput, SimplePublicObjectBatchInput

    batch = BatchInputSimplePublicObjectBatchInput(
        inputs=[SimplePublicObjectBatchInput(id=i["id"], properties=i["properties"]) for i in payload["inputs"]])
    client.crm.contacts.batch_api.update(batch_input_simple_public_object_batch_input=batch)


def drain(store: EventStore, client: Any) -> tuple[int, int, int, list[str]]:
    """Send every outbox batch, oldest first: (sent, still failing, contacts, errors)."""
    with store.read() as conn:
        pending = conn.execute(sa.select(export_outbox_t.c.id, export_outbox_t.c.payload)
                               .where(export_outbox_t.c.target == TARGET).order_by(export_outbox_t.c.id)).all()
    sent = failed = contacts = 0
    errors: list[str] = []
    for row_id, text in pending:
        payload = json.loads(text)
        try:
            _send(client, payload)
        except Exception as exc:  # ApiException after the retries, a refused connection: keep it, try the next
            status = getattr(exc, "status", None)
            message = f"batch {row_id}: " + (f"HTTP {status} {getattr(exc, 'reason', '')}".strip() if status
                                              else f"{type(exc).__name__}: {exc}")
            errors.append(message)
            failed += 1
            with store.begin() as conn:
                conn.execute(sa.update(export_outbox_t).where(export_outbox_t.c.id == row_id)
                             .values(attempts=export_outbox_t.c.attempts + 1, last_error=message[:2000]))
            continue
        record_exported(store, TARGET, pd.DataFrame(payload["exported"]))
        with store.begin() as conn:
            conn.execute(sa.delete(export_outbox_t).where(export_outbox_t.c.id == row_id))
        sent += 1
        contacts += len(payload["inputs"])
    return sent, failed, contacts, errors


def sync_hubspot(store: EventStore, scores: pd.DataFrame, *, token: str | None = None, host: str | None = None,
                 retries: int = 5, backoff: float = 0.5, batch_size: int = BATCH_SIZE) -> SyncSummary:
    """Queue the changed scores, then send the whole outbox (older failed batches first)."""
    token = token or os.environ.get(TOKEN_ENV)
    if not token:
        raise SyncError(f"no HubSpot token: set {TOKEN_ENV} to a private app's access token "
                        "(scope crm.objects.contacts.write)")
    queued = enqueue(store, scores, batch_size)
    sent, failed, contacts, errors = drain(store, hubspot_client(token, host, retries, backoff))
    return SyncSummary(queued=queued, sent=sent, failed=failed, contacts=contacts, errors=tuple(errors))


def outbox_size(store: EventStore) -> int:
    with store.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(export_outbox_t)
                                .where(export_outbox_t.c.target == TARGET)).scalar_one())
