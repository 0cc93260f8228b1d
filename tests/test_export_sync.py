"""CRM write-back: import files, ``--changed-only`` state, and ``sync hubspot`` end to end.

The sync runs the official ``hubspot-api-client`` against a local HTTP server that implements
``POST /crm/v3/objects/contacts/batch/update`` as HubSpot documents it (bearer token, at most 100
inputs, a ``BatchResponseSimplePublicObject`` answer), scripted to answer 429 with ``Retry-After`` and
5xx, so retries, backoff and the outbox are exercised through the real client and real HTTP.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from leadscore.serving.store import EventStore
from leadscore.training.batch_score import COLUMNS
from leadscore.training.export import HUBSPOT_LIFECYCLE
from leadscore.training.sync_hubspot import outbox_size, sync_hubspot
from tests.conftest import SmallModel

TOKEN = "pat-test-token"
PATH = "/crm/v3/objects/contacts/batch/update"


class FakeHubSpot(ThreadingHTTPServer):
    """HubSpot's contacts batch update: answers from ``script`` first (status, headers), then 200."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script: list[tuple[int, dict[str, str]]] = []
        self.contacts: dict[str, dict[str, str]] = {}
        self.calls: list[tuple[float, int]] = []  # (time, status answered)
        self.always: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: FakeHubSpot

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        self.server.calls.append((time.monotonic(), status))

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path != PATH:
            return self._answer(404, {"status": "error", "message": "not found"})
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._answer(401, {"status": "error", "category": "INVALID_AUTHENTICATION"})
        if not 1 <= len(body.get("inputs", [])) <= 100:
            return self._answer(400, {"status": "error", "category": "VALIDATION_ERROR"})
        if self.server.always is not None:
            return self._answer(self.server.always, {"status": "error", "message": "unavailable"})
        if self.server.script:
            status, headers = self.server.script.pop(0)
            return self._answer(status, {"status": "error", "category": "RATE_LIMITS" if status == 429 else "ERROR"},
                                headers)
        now = "2026-11-28T00:00:00Z"
        for item in body["inputs"]:
            self.server.contacts[item["id"]] = item["properties"]
        self._answer(200, {"status": "COMPLETE", "startedAt": now, "completedAt": now, "results": [
            {"id": i["id"], "properties": i["properties"], "createdAt": now, "updatedAt": now, "archived": False}
            for i in body["inputs"]]})


@pytest.fixture()
def hubspot() -> Iterator[FakeHubSpot]:
    server = FakeHubSpot()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[EventStore]:
    s = EventStore(f"sqlite:///{tmp_path / 'events.db'}")
    yield s
    s.close()


def _scores(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    p = rng.uniform(0, 0.6, n)
    return pd.DataFrame({
        "lead_id": [f"{1000 + i}" for i in range(n)], "scored_at": pd.Timestamp("2026-11-01", tz="UTC"),
        "p_sql": p, "p_opportunity": p / 3, "stage": np.where(p > 0.4, "mql", "lead"), "previous_stage": None,
        "days_in_stage": np.nan, "reasons_positive": json.dumps(["Asked for a demo"]), "reasons_negative": "[]",
        "model_version": "1"}, columns=list(COLUMNS))


def test_sync_retries_429_and_5xx_through_the_real_client_and_is_idempotent(hubspot: FakeHubSpot,
                                                                           store: EventStore) -> None:
    scores = _scores(250)
    hubspot.script = [(429, {"Retry-After": "1"}), (503, {})]
    started = time.monotonic()
    summary = sync_hubspot(store, scores, token=TOKEN, host=hubspot.url, retries=3, backoff=0.01)
    assert (summary.queued, summary.sent, summary.failed, summary.contacts) == (3, 3, 0, 250)
    statuses = [s for _, s in hubspot.calls]
    assert statuses == [429, 503, 200, 200, 200]
    assert hubspot.calls[1][0] - hubspot.calls[0][0] >= 0.95  # Retry-After: 1 was honoured
    assert time.monotonic() - started >= 1.0
    assert set(hubspot.contacts) == set(scores["lead_id"])
    first = scores.iloc[0]
    assert hubspot.contacts[first["lead_id"]] == {
        "leadscore_p_sql": f"{first['p_sql']:.6f}", "leadscore_p_opportunity": f"{first['p_opportunity']:.6f}",
        "leadscore_stage": first["stage"], "leadscore_reasons": "Asked for a demo",
        "lifecyclestage": HUBSPOT_LIFECYCLE[first["stage"]]}
    assert outbox_size(store) == 0
    again = sync_hubspot(store, scores, token=TOKEN, host=hubspot.url, retries=0)
    assert (again.queued, again.sent) == (0, 0) and len(hubspot.calls) == 5  # nothing changed: nothing sent
    moved = scores.copy()
    moved.loc[:9, "p_sql"] = 0.95
    moved.loc[:9, "stage"] = "sql"
    third = sync_hubspot(store, moved, token=TOKEN, host=hubspot.url, retries=0)
    assert (third.queued, third.sent, third.contacts) == (1, 1, 10)
    assert hubspot.contacts[moved.loc[0, "lead_id"]]["lifecyclestage"] == "salesqualifiedlead"


def test_a_batch_that_keeps_failing_stays_in_the_outbox_until_hubspot_takes_it(hubspot: FakeHubSpot,
                                                                              store: EventStore) -> None:
    scores = _scores(120, seed=1)
    hubspot.always = 500
    down = sync_hubspot(store, scores, token=TOKEN, host=hubspot.url, retries=1, backoff=0.01)
    assert (down.queued, down.sent, down.failed) == (2, 0, 2) and "HTTP 500" in down.errors[0]
    assert outbox_size(store) == 2 and hubspot.contacts == {}
    hubspot.always = None
    up = sync_hubspot(store, scores, token=TOKEN, host=hubspot.url, retries=0)
    assert (up.queued, up.sent, up.failed, up.contacts) == (0, 2, 0, 120)  # the kept batches, not queued again
    assert outbox_size(store) == 0 and set(hubspot.contacts) == set(scores["lead_id"])


def test_sync_cli_needs_the_token_from_the_environment(hubspot: FakeHubSpot, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from leadscore.cli import app

    scores = _scores(30)
    scores.to_parquet(tmp_path / "s.parquet")
    args = ["sync", "hubspot", "--scores", str(tmp_path / "s.parquet"), "--store", f"sqlite:///{tmp_path / 'e.db'}",
            "--host", hubspot.url]
    monkeypatch.delenv("HUBSPOT_ACCESS_TOKEN", raising=False)
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and "HUBSPOT_ACCESS_TOKEN" in res.output
    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", TOKEN)
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "30 contacts updated" in res.output and len(hubspot.contacts) == 30


def test_import_files_and_changed_only(small_model: SmallModel, tmp_path: Path) -> None:
    from leadscore.cli import app
    from leadscore.training.score_files import read_scores

    crm, bundle, db = small_model.crm_dir, small_model.bundle_dir, f"sqlite:///{tmp_path / 'e.db'}"
    run = CliRunner().invoke
    base = ["score", "--crm", str(crm), "--bundle", str(bundle), "--no-reasons"]
    assert run(app, [*base, "--at", "2026-10-01", "--out", str(tmp_path / "all.parquet")]).exit_code == 0
    scores = read_scores(tmp_path / "all.parquet")
    res = run(app, [*base, "--at", "2026-10-01", "--format", "hubspot", "--changed-only", "--store", db,
                    "--out", str(tmp_path / "h1.csv")])
    assert res.exit_code == 0, res.output
    h1 = pd.read_csv(tmp_path / "h1.csv", dtype={"Record ID": str})
    assert list(h1.columns) == ["Record ID", "leadscore_p_sql", "leadscore_p_opportunity", "leadscore_stage",
                                "leadscore_reasons", "Lifecycle Stage"]
    assert sorted(h1["Record ID"]) == sorted(scores["lead_id"])  # first export: every open lead
    assert set(h1["Lifecycle Stage"]) <= set(HUBSPOT_LIFECYCLE.values())
    assert np.allclose(h1.set_index("Record ID")["leadscore_p_sql"], scores.set_index("lead_id")["p_sql"], atol=1e-6)
    assert run(app, [*base, "--at", "2026-10-01", "--format", "hubspot", "--changed-only", "--store", db,
                     "--out", str(tmp_path / "h2.csv")]).exit_code == 0
    assert pd.read_csv(tmp_path / "h2.csv").empty  # same time, same scores: nothing changed
    assert run(app, [*base, "--at", "2026-10-25", "--format", "hubspot", "--changed-only", "--store", db,
                     "--out", str(tmp_path / "h3.csv")]).exit_code == 0
    h3 = pd.read_csv(tmp_path / "h3.csv", dtype={"Record ID": str})
    assert 0 < len(h3) < len(scores) + 200  # 24 days later some leads moved, most did not
    sf = tmp_path / "sf.csv"
    assert run(app, [*base, "--at", "2026-10-01", "--format", "salesforce", "--out", str(sf)]).exit_code == 0
    sfd = pd.read_csv(sf, dtype={"Id": str})
    assert list(sfd.columns)[:2] == ["Id", "Leadscore_P_SQL__c"] and len(sfd) == len(scores)
    assert (sfd["Leadscore_Scored_At__c"] == "2026-10-01T00:00:00Z").all()
