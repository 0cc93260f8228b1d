"""The pure parts of the service without a server: wire-format mapping, auth helpers, the event store.

Fast checks of the mapping rules the HTTP tests only sample (the real SDKs and a real server are in
``test_serving.py``).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from leadscore.config import Settings
from leadscore.serving.hubspot import parse_hubspot_events
from leadscore.serving.schemas import ActivityIn
from leadscore.serving.store import EventStore, to_micros
from leadscore.serving.wire import (
    DEFAULT_EVENT_ALIASES,
    Event,
    ItemError,
    LeadUpsert,
    StageChangeIn,
    WireError,
    basic_user,
    bearer_key,
    decode_body,
    key_matches,
    parse_segment_batch,
    parse_segment_message,
    verify_hubspot,
)

CATALOGUE = ["page_view", "pricing_page_view", "demo_request", "trial_signup", "email_open", "other"]
NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def _seg(msg: dict[str, object]) -> list[Event] | None:
    return parse_segment_message(msg, None, CATALOGUE, DEFAULT_EVENT_ALIASES)


def test_segment_track_maps_event_names_and_keeps_the_original() -> None:
    (a,) = _seg({"type": "track", "userId": "u1", "event": "Demo Requested", "messageId": "m1",
                 "timestamp": "2026-10-01T10:00:00+02:00", "properties": {"plan": "pro"}}) or []
    assert isinstance(a, ActivityIn)
    assert (a.activity_id, a.lead_id, a.type) == ("m1", "u1", "demo_request")
    assert a.occurred_at == datetime(2026, 10, 1, 8, 0, tzinfo=UTC)
    assert a.properties == {"plan": "pro", "event": "Demo Requested"}
    (b,) = _seg({"type": "track", "userId": "u1", "event": "Bought Coffee", "messageId": "m2",
                 "timestamp": "2026-10-01T10:00:00Z"}) or []
    assert isinstance(b, ActivityIn) and b.type == "bought_coffee"  # the store files it under `other`


def test_segment_null_user_id_falls_back_to_anonymous_id_and_missing_ids_are_named() -> None:
    (a,) = _seg({"type": "track", "userId": None, "anonymousId": "anon", "event": "x", "messageId": "m",
                 "timestamp": "2026-10-01T00:00:00Z"}) or []
    assert isinstance(a, ActivityIn) and a.lead_id == "anon"
    with pytest.raises(ItemError) as e:
        _seg({"type": "track", "userId": None, "anonymousId": None, "event": "x", "messageId": "m"})
    assert e.value.field == "userId"
    with pytest.raises(ItemError) as e:
        _seg({"type": "track", "userId": "u", "event": "x", "timestamp": "2026-10-01T00:00:00Z"})
    assert e.value.field == "messageId"
    with pytest.raises(ItemError) as e:
        _seg({"type": "track", "userId": "u", "event": "x", "messageId": "m", "timestamp": "soon"})
    assert e.value.field == "timestamp"


def test_segment_identify_group_and_page() -> None:
    (u,) = _seg({"type": "identify", "userId": "u1", "timestamp": "2026-10-01T00:00:00Z",
                 "traits": {"email": "Ana@Example.COM", "title": "CTO", "address": {"country": "PT"},
                            "company": {"id": 42, "name": "Acme", "employee_count": 120}}}) or []
    assert isinstance(u, LeadUpsert)
    assert (u.props.email_domain, u.props.job_title, u.props.country, u.props.account_id) == ("example.com", "CTO", "PT", "42")
    assert u.account is not None and u.account.employees == 120
    (g,) = _seg({"type": "group", "userId": "u1", "groupId": "acc-9", "timestamp": "2026-10-01T00:00:00Z",
                 "traits": {"name": "Globex", "industry": "software", "employees": 50}}) or []
    assert isinstance(g, LeadUpsert) and g.props.account_id == "acc-9"
    assert g.account is not None and (g.account.name, g.account.employees) == ("Globex", 50)
    (p,) = _seg({"type": "page", "userId": "u1", "messageId": "p1", "timestamp": "2026-10-01T00:00:00Z",
                 "properties": {"path": "/en/pricing"}}) or []
    assert isinstance(p, ActivityIn) and p.type == "pricing_page_view"
    assert _seg({"type": "screen", "userId": "u1"}) is None


def test_segment_batch_reports_bad_messages_by_index_and_size() -> None:
    body = {"batch": [
        {"type": "track", "userId": "u", "event": "x", "messageId": "a", "timestamp": "2026-10-01T00:00:00Z"},
        {"type": "track", "userId": "u", "event": 5, "messageId": "b", "timestamp": "2026-10-01T00:00:00Z"},
        {"type": "identify", "userId": "u", "timestamp": "2026-10-01T00:00:00Z", "traits": {"company": {"id": "c", "employee_count": "lots"}}},
        {"type": "alias", "userId": "u"},
    ], "sentAt": "2026-10-01T00:00:01Z"}
    parsed = parse_segment_batch(body, CATALOGUE, DEFAULT_EVENT_ALIASES, 32768, [10, 10, 10, 10])
    assert [i for i, _ in parsed.events] == [0]
    assert [(i, f) for i, f, _ in parsed.errors] == [(1, "batch[1].event"), (2, "batch[2].traits.employees")]
    assert parsed.ignored == 1
    too_big = parse_segment_batch(body, CATALOGUE, DEFAULT_EVENT_ALIASES, 32768, [40000, 10, 10, 10])
    assert too_big.errors[0][:2] == (0, "batch[0]")
    with pytest.raises(WireError) as e:
        parse_segment_batch({"nope": []}, CATALOGUE, DEFAULT_EVENT_ALIASES, 32768, [])
    assert e.value.field == "batch"


def test_hubspot_events_map_to_leads_and_stage_changes(settings: Settings) -> None:
    ms = int(NOW.timestamp() * 1000)
    parsed = parse_hubspot_events([
        {"subscriptionType": "contact.creation", "objectId": 7, "occurredAt": ms},
        {"subscriptionType": "contact.propertyChange", "objectId": 7, "occurredAt": ms, "propertyName": "lifecyclestage",
         "propertyValue": "marketingqualifiedlead"},
        {"subscriptionType": "contact.propertyChange", "objectId": 7, "occurredAt": ms, "propertyName": "email",
         "propertyValue": "x@corp.example"},
        {"subscriptionType": "contact.propertyChange", "objectId": 7, "occurredAt": ms, "propertyName": "lifecyclestage",
         "propertyValue": "other"},
        {"subscriptionType": "contact.propertyChange", "objectId": 7, "occurredAt": ms, "propertyName": "favourite_colour",
         "propertyValue": "blue"},
        {"subscriptionType": "contact.creation", "occurredAt": ms},
    ], settings.stages.all)
    kinds = [type(e).__name__ for _, e in parsed.events]
    assert kinds == ["LeadUpsert", "LeadUpsert", "StageChangeIn", "LeadUpsert"]
    stage = next(e for _, e in parsed.events if isinstance(e, StageChangeIn))
    assert (stage.lead_id, stage.stage, stage.set_by) == ("7", "mql", "sales")
    assert [(i, f) for i, f, _ in parsed.errors] == [(3, "[3].propertyValue"), (5, "[5].objectId")]
    assert parsed.ignored == 1


def _sign(secret: str, uri: str, body: bytes, ts: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), b"POST" + uri.encode() + body + ts.encode(), hashlib.sha256).digest()).decode()


def test_hubspot_signature_checks() -> None:
    uri, body = "https://crm.example/webhooks/hubspot", b'[{"objectId": 1}]'
    ts = str(int(NOW.timestamp() * 1000))
    verify_hubspot("s3cret", "POST", uri, body, ts, _sign("s3cret", uri, body, ts), NOW)
    cases = [
        (ts, None, "X-HubSpot-Signature-v3"),
        (ts, _sign("other", uri, body, ts), "X-HubSpot-Signature-v3"),
        (ts, _sign("s3cret", uri, body + b" ", ts), "X-HubSpot-Signature-v3"),
        (None, _sign("s3cret", uri, body, ts), "X-HubSpot-Request-Timestamp"),
        ("yesterday", _sign("s3cret", uri, body, "yesterday"), "X-HubSpot-Request-Timestamp"),
    ]
    for t, sig, field in cases:
        with pytest.raises(WireError) as e:
            verify_hubspot("s3cret", "POST", uri, body, t, sig, NOW)
        assert e.value.status == 401 and e.value.field == field
    for delta in (timedelta(minutes=-6), timedelta(minutes=1)):
        old = str(int((NOW + delta).timestamp() * 1000))
        with pytest.raises(WireError):
            verify_hubspot("s3cret", "POST", uri, body, old, _sign("s3cret", uri, body, old), NOW)


def test_auth_helpers_and_bodies() -> None:
    assert bearer_key("Bearer abc") == "abc" and bearer_key("Basic abc") is None and bearer_key(None) is None
    assert basic_user("Basic " + base64.b64encode(b"wk:").decode()) == "wk"
    assert basic_user("Basic !!!") is None
    assert key_matches("k2", ["k1", "k2"]) and not key_matches("k3", ["k1"]) and not key_matches(5, ["5"])
    assert decode_body(gzip.compress(b'{"a": 1}'), "gzip", 1000) == b'{"a": 1}'
    with pytest.raises(WireError) as e:
        decode_body(gzip.compress(b"x" * 5000), "gzip", 1000)  # a zip bomb stops at the limit
    assert e.value.status == 413
    with pytest.raises(WireError) as e:
        decode_body(b"not gzip", "gzip", 1000)
    assert e.value.status == 400
    with pytest.raises(WireError) as e:
        decode_body(b"x", "br", 1000)
    assert e.value.status == 415


def test_store_is_idempotent_and_infers_created_at(tmp_path: Path, settings: Settings) -> None:
    store = EventStore(f"sqlite:///{tmp_path / 'e.db'}")
    t1, t2 = pd.Timestamp("2026-10-02", tz="UTC"), pd.Timestamp("2026-10-01", tz="UTC")
    row = {"activity_id": "a1", "lead_id": "l1", "occurred_at": to_micros(t1), "type": "page_view",
           "properties": None, "received_at": 0}
    with store.begin() as conn:
        store.upsert_lead(conn, "l1", {"job_title": "CTO"}, t1)
        assert store.add_activities(conn, [row, row]) == [True, False]
        store.upsert_lead(conn, "l1", {}, t2)  # an earlier event moves the inferred creation back
        arrays = store.load_lead(conn, "l1", t1, settings)
    assert store.count_activities("l1") == 1
    assert arrays.created == to_micros(t2) and len(arrays.act_t) == 1
    with store.begin() as conn:
        store.upsert_lead(conn, "l1", {"created_at": pd.Timestamp("2026-09-01", tz="UTC")}, t1)
        store.upsert_lead(conn, "l1", {}, pd.Timestamp("2026-08-01", tz="UTC"))  # explicit wins from now on
        assert store.load_lead(conn, "l1", t1, settings).created == to_micros(pd.Timestamp("2026-09-01", tz="UTC"))
        assert len(store.load_lead(conn, "l1", t2, settings).act_t) == 0  # nothing after as_of
    store.close()


def _same_history(a: EventStore, b: EventStore, lead_id: str, as_of: pd.Timestamp) -> int:
    """Both stores give the same features (the cache holds more rows of the account than the SQL read
    of its window, so the arrays may differ where the kernel does not look); returns the lead's
    activities."""
    from leadscore.config import load_settings
    from leadscore.features.online import compute_arrays

    settings = load_settings()
    with a.begin() as ca, b.begin() as cb:
        ha, hb = a.load_lead(ca, lead_id, as_of, settings), b.load_lead(cb, lead_id, as_of, settings)
    assert np.array_equal(ha.act_t, hb.act_t) and np.array_equal(ha.act_k, hb.act_k)
    fa, fb = (compute_arrays(h, [as_of], settings) for h in (ha, hb))
    assert all(str(x) == str(y) for ra, rb in zip(fa, fb, strict=True) for x, y in zip(ra.values(), rb.values(),
                                                                                       strict=True)), lead_id
    return len(ha.act_t)


def test_activity_cache_follows_writes_of_other_processes(tmp_path: Path) -> None:
    """The in-memory activities equal SQL reads whoever writes: another store (worker) adding rows,
    late activities, a lead joining or leaving the account, rows removed and renumbered by VACUUM."""
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 'e.db'}"
    writer, plain, cached = EventStore(url), EventStore(url), EventStore(url, cache_rows=10_000)
    assert cached.cache is not None and plain.cache is None
    t0 = pd.Timestamp("2026-10-01", tz="UTC")
    n = 0

    def add(lead: str, days: float, typ: str = "page_view") -> None:
        nonlocal n
        n += 1
        row = {"activity_id": f"a{n}", "lead_id": lead, "occurred_at": to_micros(t0 + timedelta(days=days)),
               "type": typ, "properties": None, "received_at": 0}
        with writer.begin() as conn:
            writer.upsert_lead(conn, lead, {}, t0)
            writer.add_activities(conn, [row])

    with writer.begin() as conn:
        writer.upsert_account(conn, "acc", {"name": "Acme"}, t0)
        for lead in ("l1", "l2", "l3"):
            writer.upsert_lead(conn, lead, {"account_id": "acc"}, t0)
        writer.upsert_lead(conn, "solo", {}, t0)
    for i in range(40):
        add(("l1", "l2", "l3", "solo")[i % 4], i, "demo_request" if i % 7 == 0 else "page_view")
    at = t0 + timedelta(days=45)
    for lead in ("l1", "l2", "solo"):
        assert _same_history(cached, plain, lead, at) > 0
    add("l2", 44)  # a colleague's new activity, written elsewhere
    add("l1", 3)  # a late activity of the lead itself
    assert _same_history(cached, plain, "l1", at) == _same_history(plain, plain, "l1", at)
    with writer.begin() as conn:
        writer.upsert_lead(conn, "l4", {"account_id": "acc"}, t0)  # joins with its own history
    add("l4", 43)
    _same_history(cached, plain, "l1", at)
    with writer.begin() as conn:
        writer.upsert_lead(conn, "l3", {"account_id": "other"}, t0)  # leaves the account
    _same_history(cached, plain, "l1", at)
    _same_history(cached, plain, "l3", at)
    with writer.engine.begin() as conn:  # by hand: the newest row goes, the rest is renumbered
        conn.execute(sa.text("DELETE FROM activities WHERE activity_id = :a"), {"a": f"a{n}"})
        conn.execute(sa.text("DELETE FROM activities WHERE activity_id = 'a5'"))
    with writer.engine.connect() as conn:
        conn.execute(sa.text("VACUUM"))
    add("l1", 44.5)
    for lead in ("l1", "l2", "l4", "solo"):
        _same_history(cached, plain, lead, at)
    assert cached.cache.stats["resets"] >= 2
    for s in (writer, plain, cached):
        s.close()


def test_warmed_activity_cache_reads_like_sql(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'e.db'}"
    plain = EventStore(url)
    t0 = pd.Timestamp("2026-10-01", tz="UTC")
    with plain.begin() as conn:
        for i in range(12):
            plain.upsert_lead(conn, f"l{i}", {"account_id": f"acc{i % 3}"} if i % 4 else {}, t0)
        plain.add_activities(conn, [
            {"activity_id": f"a{j}", "lead_id": f"l{j % 12}", "occurred_at": to_micros(t0 + timedelta(hours=j)),
             "type": "page_view", "properties": None, "received_at": 0} for j in range(200)])
    cached = EventStore(url, cache_rows=1000)
    assert cached.warm_cache() == 200
    assert cached.cache is not None and len(cached.cache.groups) == 3 + 3  # three accounts, three leads alone
    for i in range(12):
        _same_history(cached, plain, f"l{i}", t0 + timedelta(days=5))
    assert cached.cache.stats["loads"] == 0
    small = EventStore(url, cache_rows=100)
    assert 0 < small.warm_cache() <= 100 + 200 // 3
    for s in (plain, cached, small):
        s.close()


def test_background_wal_checkpoints(tmp_path: Path) -> None:
    """Commits leave the WAL to a background thread: the database file grows without any commit
    checkpointing (they would only past 10000 pages), and the thread stops with the store."""
    import sqlite3
    import threading
    import time

    db = tmp_path / "e.db"
    store = EventStore(f"sqlite:///{db}", checkpoint_seconds=0.05)
    store._stop.set()  # hold the thread back while writing
    store._checkpointer.join()  # type: ignore[union-attr]
    t0 = pd.Timestamp("2026-10-01", tz="UTC")
    with store.begin() as conn:
        store.upsert_lead(conn, "l1", {}, t0)
        store.add_activities(conn, [{"activity_id": f"a{i}", "lead_id": "l1", "occurred_at": to_micros(t0),
                                     "type": "page_view", "properties": None, "received_at": 0} for i in range(500)])
    before = db.stat().st_size
    assert (tmp_path / "e.db-wal").stat().st_size > 0
    store._stop.clear()
    store._checkpointer = threading.Thread(target=store._checkpoint_loop, args=(0.05,), daemon=True)
    store._checkpointer.start()
    deadline = time.monotonic() + 10
    while db.stat().st_size == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert db.stat().st_size > before
    store.close()
    assert not store._checkpointer.is_alive()
    assert sqlite3.connect(db).execute("SELECT count(*) FROM activities").fetchone()[0] == 500
