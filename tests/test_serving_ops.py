"""Operational faults of a real ``leadscore serve``: kill -9 under load, orphaned workers, unusable stores.

Each test starts the CLI (which runs ``bentoml serve``, which runs the worker) on a free loopback
port, with the model the serving tests share, and hurts it the way an operator or a crash would.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import SmallModel
from tests.test_serving_support import (
    API_KEY,
    REPO_ROOT,
    Server,
    alive,
    cli_serve_cmd,
    port_is_free,
    process_tree,
    server_env,
    wait_until,
)

pytestmark = pytest.mark.server

AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def bundle_dir(small_model: SmallModel) -> Path:
    """The session's small model (trained once by the real pipeline)."""
    return small_model.bundle_dir


def _cli_server(bundle_dir: Path, root: Path, port: int | None = None) -> Server:
    store_url = f"sqlite:///{root / 'events.db'}"
    server = Server(server_env(None, store_url), root / "server.log")
    server.cmd = cli_serve_cmd(bundle_dir, store_url)
    if port is not None:
        server.port = port
    return server


def _batch(n: int, size: int) -> list[dict[str, str]]:
    """Batch ``n``: ``size`` activities of one lead (one score per request), a minute apart."""
    return [{"activity_id": f"d-{n}-{k}", "lead_id": f"durable-{n % 40}", "type": "page_view",
             "occurred_at": f"2026-10-{1 + n % 28:02d}T{k // 60:02d}:{k % 60:02d}:00Z"} for k in range(size)]


def test_kill_9_under_load_loses_and_duplicates_nothing(bundle_dir: Path, tmp_path: Path) -> None:
    """>= 2,000 acknowledged activities; every process of the server killed -9 mid-stream; restart."""
    server = _cli_server(bundle_dir, tmp_path)
    server.start()
    n_batches, size = 100, 25
    acked: set[int] = set()
    lock = threading.Lock()
    stop = threading.Event()

    def client(first: int) -> None:
        with httpx.Client(base_url=server.url, timeout=30.0) as c:
            for n in range(first, n_batches, 2):
                if stop.is_set():
                    return
                try:
                    r = c.post("/activities", json={"activities": _batch(n, size)}, headers=AUTH)
                except httpx.HTTPError:
                    continue  # not acknowledged: the CRM retries it later
                if r.status_code == 200 and r.json()["stored"] + r.json()["duplicates"] == size:
                    with lock:
                        acked.add(n)

    threads = [threading.Thread(target=client, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    assert server.proc is not None
    assert wait_until(lambda: len(acked) >= 60, timeout=240), f"only {len(acked)} batches acknowledged"
    tree = process_tree(server.proc.pid)
    for pid in tree:  # a crash of everything at once, requests in flight
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    stop.set()
    for t in threads:
        t.join()
    server.proc.wait(timeout=10)
    assert wait_until(lambda: not alive(tree), timeout=15)
    with lock:
        before = set(acked)
    assert len(before) * size >= 1500

    server.start()  # same store, same port
    db = sqlite3.connect(tmp_path / "events.db")
    try:
        ids = {r[0] for r in db.execute("SELECT activity_id FROM activities")}
        assert {f"d-{n}-{k}" for n in before for k in range(size)} <= ids  # 0 acknowledged lost
        # the CRM retries what was not acknowledged, and some of what was
        with httpx.Client(base_url=server.url, timeout=30.0) as c:
            for n in [*(n for n in range(n_batches) if n not in before), *sorted(before)[:5]]:
                r = c.post("/activities", json={"activities": _batch(n, size)}, headers=AUTH)
                assert r.status_code == 200, r.text
                acked.add(n)
        assert len(acked) * size >= 2000
        rows = db.execute("SELECT count(*), count(DISTINCT activity_id) FROM activities").fetchone()
        assert rows == (n_batches * size, n_batches * size)  # everything once, nothing twice
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        db.close()
        server.stop()


def test_killing_serve_leaves_no_worker_and_frees_the_port(bundle_dir: Path, tmp_path: Path) -> None:
    """kill -9 of ``leadscore serve`` alone, then of its process group: no worker survives, restart works."""
    server = _cli_server(bundle_dir, tmp_path)
    for how in ("parent", "group"):
        server.start()
        assert server.proc is not None
        tree = process_tree(server.proc.pid)
        assert len(tree) >= 3, tree  # leadscore serve -> bentoml serve -> worker
        if how == "parent":
            os.kill(server.proc.pid, signal.SIGKILL)
        else:
            os.killpg(server.proc.pid, signal.SIGKILL)  # the worker runs in a session of its own
        server.proc.wait(timeout=10)
        assert wait_until(lambda tree=tree: not alive(tree), timeout=30), f"{how}: survivors {alive(tree)}"
        assert wait_until(lambda: port_is_free(server.port), timeout=10), f"{how}: port {server.port} still taken"
        server.proc = None
    server.start()  # the same port once more
    assert httpx.get(server.url + "/ready", timeout=10).status_code == 200
    server.stop()


def test_stale_colleagues_are_rescored_in_the_background_and_sigterm_stops_every_worker(
        bundle_dir: Path, tmp_path: Path) -> None:
    """A late activity marks its account's colleagues; the worker's thread rescores them (``/ready``'s
    ``stale_leads`` drains to 0); then SIGTERM to ``leadscore serve`` alone stops the server and every
    worker and frees the port."""
    server = _cli_server(bundle_dir, tmp_path)
    server.start()
    assert server.proc is not None
    try:
        with httpx.Client(base_url=server.url, timeout=60.0) as c:
            ready = c.get("/ready").json()
            assert ready["stale_worker"] is True and ready["stale_leads"] == 0
            leads = [f"bg-{i}" for i in range(3)]
            for k in range(9):
                r = c.post("/activities", headers=AUTH, json={
                    "activity_id": f"bg-a{k}", "lead_id": leads[k % 3], "type": "pricing_page_view",
                    "occurred_at": f"2026-10-{1 + k:02d}T10:00:00Z", "account": {"account_id": "bg-acc", "employees": 90}})
                assert r.status_code == 200, r.text
            before = {lead: len(c.get(f"/leads/{lead}", headers=AUTH).json()["history"]) for lead in leads}
            r = c.post("/activities", headers=AUTH, json={"activity_id": "bg-late", "lead_id": leads[0],
                                                          "type": "demo_request", "occurred_at": "2026-10-02T12:00:00Z"})
            assert r.status_code == 200, r.text
            assert wait_until(lambda: c.get("/ready").json()["stale_leads"] == 0, timeout=60)
            after = {lead: len(c.get(f"/leads/{lead}", headers=AUTH).json()["history"]) for lead in leads}
            # every lead scored after Oct 2 got a refreshed latest score (its colleagues' roll-ups changed)
            assert all(after[lead] > before[lead] for lead in leads), (before, after)
        tree = process_tree(server.proc.pid)
        assert len(tree) >= 3, tree
        server.proc.send_signal(signal.SIGTERM)  # to leadscore serve only, as a process manager does
        server.proc.wait(timeout=60)
        assert wait_until(lambda: not alive(tree), timeout=30), f"survivors {alive(tree)}"
        assert wait_until(lambda: port_is_free(server.port), timeout=10)
    finally:
        server.stop()


#: root writes anywhere; without these two capabilities it meets file modes like anyone (and can still
#: run the interpreter, which lives under root's home here)
AS_PLAIN_ROOT = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]


@pytest.mark.parametrize("fault", ["random-bytes", "truncated", "read-only-directory"])
def test_unusable_store_is_refused_at_start_with_one_line(tmp_path: Path, fault: str,
                                                          request: pytest.FixtureRequest) -> None:
    """Random bytes, a truncated copy, a read-only directory: one line naming the file, exit 2, fast.

    The store is checked before the model is looked at, so no model is needed (nor given)."""
    from leadscore.serving.store import EventStore

    good = tmp_path / "good.db"
    store = EventStore(f"sqlite:///{good}")
    with store.begin() as conn:
        store.add_activities(conn, [{"activity_id": f"a{i}", "lead_id": f"l{i % 50}", "occurred_at": i,
                                     "type": "page_view", "properties": None, "received_at": i} for i in range(5000)])
    store.close()
    as_user: list[str] = []
    if fault == "random-bytes":
        path = tmp_path / "random.db"
        path.write_bytes(os.urandom(64 * 1024))
    elif fault == "truncated":
        path = tmp_path / "truncated.db"
        data = good.read_bytes()
        path.write_bytes(data[: len(data) // 3])
    else:
        # root writes anywhere: then the command runs without the capabilities that let it
        ro = tmp_path / "ro"
        ro.mkdir()
        path = ro / "events.db"
        path.write_bytes(good.read_bytes())
        path.chmod(0o644)
        ro.chmod(0o555)
        request.addfinalizer(lambda: ro.chmod(0o755))
        as_user = AS_PLAIN_ROOT if os.geteuid() == 0 else []
    env = server_env(None, f"sqlite:///{path}")
    env["HOME"] = str(path.parent)
    cmd = [str(Path(sys.executable).with_name("leadscore")), "--config", str(REPO_ROOT / "configs"), "serve",
           "--port", "1", "--store", f"sqlite:///{path}"]
    started = time.monotonic()
    out = subprocess.run([*as_user, *cmd], env=env, capture_output=True, text=True, timeout=60, cwd=path.parent)
    took = time.monotonic() - started
    lines = [ln for ln in (out.stdout + out.stderr).splitlines() if ln.strip()]
    assert out.returncode == 2, (out.returncode, lines)
    assert len(lines) == 1, lines
    assert str(path) in lines[0] and lines[0].startswith("error: event store"), lines[0]
    assert took < 30, took  # refused before any server started (no crash loop)


def test_missing_or_mismatched_model_is_refused_at_start_with_one_line(tmp_path: Path, bundle_dir: Path) -> None:
    """No such registered model, or a bundle of another feature schema: one line, exit 2, before any worker."""
    store = f"sqlite:///{tmp_path / 'events.db'}"
    tampered = tmp_path / "tampered"
    shutil.copytree(bundle_dir, tampered)
    doc = json.loads((tampered / "bundle.json").read_text())
    doc["schema_hash"] = "0000another0000"
    (tampered / "bundle.json").write_text(json.dumps(doc))
    base = [str(Path(sys.executable).with_name("leadscore")), "--config", str(REPO_ROOT / "configs"), "serve",
            "--port", "1", "--store", store]
    for extra, says in ((["--model", "models:/no-such-model@champion"], "cannot load model"),
                        (["--bundle", str(tampered)], "refusing to serve")):
        started = time.monotonic()
        out = subprocess.run([*base, *extra], env=server_env(None, store), capture_output=True, text=True,
                             timeout=120, cwd=tmp_path)
        lines = [ln for ln in (out.stdout + out.stderr).splitlines() if ln.strip()]
        assert out.returncode == 2, (out.returncode, lines)
        assert len(lines) == 1 and lines[0].startswith("error:") and says in lines[0], lines
        assert time.monotonic() - started < 60
