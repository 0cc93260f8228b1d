"""Soak the scoring service: a steady rate of ``POST /activities`` against a real ``leadscore serve``.

Usage: python benchmarks/soak.py [--minutes 10] [--rate 40] [--leads 2000] [--bundle DIR | --model URI]

Bounded (``--minutes`` x ``--rate`` requests), on loopback. The server is ``leadscore serve`` (the
CLI, which starts ``bentoml serve`` and its worker), on a SQLite event store holding a generated CRM.
Each request is a new activity of an existing lead, stored and scored. Latency is measured from
the *scheduled* send time (open loop), so a server that falls behind cannot hide its queue.

At most ``--max-in-flight`` requests are on the wire at once (one per connection); the others wait in
the client, their wait counted in their latency. (Handing thousands of late requests to the HTTP
client's connection pool instead made the *client* spend its time re-scanning the pool's queue, a cost
quadratic in the backlog, and stop sending.)

Printed every minute: p50/p99 of the requests scheduled in that minute, errors (non-2xx or
transport), the RSS of the whole process tree (``leadscore serve`` and every descendant), the answers
received during that minute and the server tree's CPU time per answer (a figure that does not depend
on how busy the machine is: on a shared machine the latencies do). The last line is one JSON
object: ``rss_growth_pct`` (tree RSS at the end of the last minute against the end of the first,
so start-up and warm-up are not counted as growth), ``p99_first_min_ms``, ``p99_last_min_ms``,
``errors``, the per-minute rows, and ``stale_leads_end`` / ``drain_s`` (leads still marked for
background rescoring when the load stops, and the seconds until ``GET /ready`` reports 0). Goal: RSS growth < 10 %, last-minute p99 < 1.5x the first.
Without ``--bundle``/``--model`` a small model is trained first with the real pipeline.

The server's whole process tree is stopped when the script ends, however it ends (error, SIGTERM,
Ctrl-C): :mod:`benchmarks.server_proc`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.server_proc import stop_on_signals, stop_tree  # noqa: E402


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MB (0 if it is gone)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / 2**20


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and its live descendants."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            continue
    return total


def start_server(env: dict[str, str], port: int, log: Path, timeout: float = 240.0) -> subprocess.Popen[bytes]:
    """``leadscore serve`` on ``port``, in a session of its own; returns once ``/ready`` answers 200."""
    import httpx

    cmd = [str(Path(sys.executable).with_name("leadscore")), "--config", str(REPO_ROOT / "configs"), "serve",
           "--port", str(port)]
    from leadscore.serving.runtime import die_with_parent

    me = os.getpid()  # the server goes when this script goes, however it ends
    proc = subprocess.Popen(cmd, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, cwd=REPO_ROOT,
                            start_new_session=True, preexec_fn=lambda: die_with_parent(signal.SIGTERM, me))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"leadscore serve exited with {proc.returncode}; see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2.0).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop_server(proc)
    raise RuntimeError(f"leadscore serve not ready after {timeout}s; see {log}")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to ``leadscore serve`` (it stops its server and workers); after 30 s SIGKILL to whatever
    of its process tree is left (workers run in sessions of their own: a group kill misses them)."""
    killed = stop_tree(proc, timeout=30)
    if killed:
        print(f"server processes still running 30 s after SIGTERM were killed: {killed}", file=sys.stderr)


def drain_seconds(base: str, timeout: float = 120.0) -> tuple[int, float]:
    """Leads marked stale when the load stops, and the seconds until ``/ready`` reports none."""
    import httpx

    start = time.perf_counter()
    first = -1
    while True:
        n = int(httpx.get(f"{base}/ready", timeout=10).json().get("stale_leads", 0))
        first = n if first < 0 else first
        if n == 0 or time.perf_counter() - start > timeout:
            return first, round(time.perf_counter() - start, 1)
        time.sleep(0.5)


async def soak(url: str, pid: int, bodies: Any, minutes: float, rate: float, max_in_flight: int = 64
               ) -> list[dict[str, Any]]:
    """Send ``rate`` requests a second for ``minutes``; per-minute latency, errors and tree RSS."""
    import httpx
    import numpy as np

    n = int(minutes * 60 * rate)
    per_min: dict[int, list[float]] = {}
    errors: dict[int, int] = {}
    rss: dict[int, float] = {}
    served: list[int] = [0]  # answers received so far (any minute's)
    load: dict[int, tuple[int, float]] = {}  # per wall-clock minute: answers received, server CPU ms per answer
    headers = {"Authorization": "Bearer soak-key"}
    # idle connections are dropped by the client before the server's keep-alive timeout (uvicorn: 5 s)
    # closes them: at equal timeouts a request sent on a connection the server is closing fails
    limits = httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight,
                          keepalive_expiry=2.0)
    slots = asyncio.Semaphore(max_in_flight)
    async with httpx.AsyncClient(timeout=60.0, limits=limits) as client:
        start = time.perf_counter()

        async def one(i: int, scheduled: float) -> None:
            minute = int(i / rate // 60)
            async with slots:
                try:
                    r = await client.post(url, json=bodies(i), headers=headers)
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
            per_min.setdefault(minute, []).append(time.perf_counter() - scheduled)
            served[0] += 1
            if not ok:
                errors[minute] = errors.get(minute, 0) + 1

        async def sample() -> None:
            total = int(np.ceil(minutes))
            cpu, done = tree_cpu_s(pid), served[0]
            for m in range(total):
                await asyncio.sleep(max(0.0, start + (m + 1) * 60 - time.perf_counter()))
                rss[m] = tree_rss_mb(pid)
                cpu_now, done_now = tree_cpu_s(pid), served[0]
                answered = done_now - done
                load[m] = (answered, round(1e3 * (cpu_now - cpu) / max(answered, 1), 1))
                cpu, done = cpu_now, done_now
                lat = np.array(per_min.get(m, [0.0])) * 1e3
                print(f"minute {m + 1:3d}: {len(per_min.get(m, [])):5d} req  p50 {np.percentile(lat, 50):8.1f} ms  "
                      f"p99 {np.percentile(lat, 99):8.1f} ms  errors {errors.get(m, 0):4d}  tree RSS {rss[m]:8.1f} MB  "
                      f"answered {answered:5d}  server CPU {load[m][1]:6.1f} ms/answer", flush=True)

        async def send() -> None:
            running: set[asyncio.Task[None]] = set()
            for i in range(n):
                scheduled = start + i / rate
                await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
                task = asyncio.create_task(one(i, scheduled))
                running.add(task)
                task.add_done_callback(running.discard)
            await asyncio.gather(*running)

        sampler = asyncio.create_task(sample())
        await send()
        await sampler
    rows = []
    for m in sorted(per_min):
        lat = np.array(per_min[m]) * 1e3
        rows.append({"minute": m + 1, "n": len(lat), "p50_ms": round(float(np.percentile(lat, 50)), 1),
                     "p99_ms": round(float(np.percentile(lat, 99)), 1), "errors": errors.get(m, 0),
                     "rss_mb": round(rss.get(m, tree_rss_mb(pid)), 1), "answered": load.get(m, (0, 0.0))[0],
                     "cpu_ms_per_answer": load.get(m, (0, 0.0))[1]})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="length of the run (whole minutes are reported)")
    ap.add_argument("--rate", type=float, default=40.0, help="requests per second, open loop")
    ap.add_argument("--leads", type=int, default=2000, help="leads in the generated CRM")
    ap.add_argument("--months", type=int, default=9)
    ap.add_argument("--bundle", default=None, help="serve this bundle directory")
    ap.add_argument("--model", default=None, help="serve this registry URI (e.g. models:/leadscore@champion)")
    ap.add_argument("--max-in-flight", type=int, default=64, help="requests on the wire at once (connections)")
    args = ap.parse_args()
    if args.minutes <= 0 or args.rate <= 0:
        ap.error("--minutes and --rate must be positive")

    import numpy as np

    from benchmarks.serving import _free_port, _prepare

    work = Path(tempfile.mkdtemp(prefix="leadscore-soak-"))
    env, history = _prepare(work, args.leads, args.months, args.bundle, args.model)
    env["LEADSCORE_API_KEYS"] = "soak-key"
    port = _free_port()
    rng = np.random.default_rng(17)
    lead_ids = history.leads["lead_id"].to_numpy()
    types = ["page_view", "email_open", "pricing_page_view", "email_click", "webinar_attended", "demo_request"]
    t0 = history.cutoff

    def body(i: int) -> dict[str, Any]:
        return {"activity_id": f"soak-{i}", "lead_id": str(lead_ids[rng.integers(len(lead_ids))]),
                "occurred_at": (t0 + np.timedelta64(i, "s")).isoformat(), "type": types[i % len(types)]}

    print(f"starting leadscore serve on port {port} (log: {work / 'server.log'}) ...", flush=True)
    with stop_on_signals():
        proc = start_server(env, port, work / "server.log")
        try:
            print(f"soak: {args.rate:g} req/s for {args.minutes:g} min, POST /activities, loopback", flush=True)
            rows = asyncio.run(soak(f"http://127.0.0.1:{port}/activities", proc.pid, body, args.minutes, args.rate,
                                    args.max_in_flight))
            stale_end, drain_s = drain_seconds(f"http://127.0.0.1:{port}")
        finally:
            stop_server(proc)
    first, last = rows[0], rows[-1]
    out = {
        "rss_growth_pct": round(100.0 * (last["rss_mb"] - first["rss_mb"]) / first["rss_mb"], 2),
        "p99_first_min_ms": first["p99_ms"],
        "p99_last_min_ms": last["p99_ms"],
        "errors": sum(r["errors"] for r in rows),
        "stale_leads_end": stale_end,
        "drain_s": drain_s,
        "minutes": rows,
        "rate": args.rate,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
