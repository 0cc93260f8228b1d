"""Benchmark the scoring service: single-activity ``POST /activities`` against two echo floors.

Usage: python benchmarks/serving.py [--leads 2000] [--months 9] [--requests 600] [--rate 20]
          [--concurrency 8] [--bundle DIR | --model URI] [--store URL] [--json OUT]

In one run, on loopback, three servers are started as child processes and measured the same way:
  * ``leadscore``: ``bentoml serve leadscore.serving.service:LeadScoreService`` on an event store that
    holds a generated CRM (so every scored lead has a realistic history and account): a fresh SQLite
    file, or the empty database ``--store postgresql://...`` names (where the activity cache is bypassed);
  * ``bentoml-echo``: a bare ``@bentoml.service`` whose one ``@bentoml.api`` returns its input;
  * ``fastapi-echo``: a bare FastAPI app under uvicorn returning its input.
Each gets (a) a fixed open-loop rate (latency measured from the *scheduled* send time, so a slow
server cannot hide queueing) and (b) saturation: ``--concurrency`` closed-loop clients until
``--requests`` requests are done. Every request to leadscore is a new activity (new id) of an
existing lead, stored and scored. Printed: p50/p95/p99 latency, throughput, peak RSS of each
server's process tree, and the ratios to the BentoML echo (goals, at the fixed rate: p50 <= 1.5x,
p99 <= 2x; at saturation: throughput >= 40 % of the echo's). The ratios are what to compare across
runs: the machine's load moves both servers' latencies, measured in the same run, alike.
Without ``--bundle``/``--model`` a model is trained first with the real pipeline (a small one).
Loops are bounded by request counts; nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a script: ``benchmarks.server_proc`` must be importable
    sys.path.insert(0, str(REPO_ROOT))


# ----------------------------------------------------------------------------------- the echo floors
# Built lazily (PEP 562) so that importing this module to find them costs nothing else.


def _bentoml_echo() -> Any:
    import bentoml

    @bentoml.service(name="echo", workers=1, traffic={"timeout": 30})
    class EchoService:
        @bentoml.api
        def echo(self, activity: dict[str, Any]) -> dict[str, Any]:
            return activity

    return EchoService


def _fastapi_echo() -> Any:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    app = FastAPI()

    async def echo(request: Request) -> JSONResponse:
        return JSONResponse(await request.json())

    # the annotations are strings (``from __future__ import annotations``) naming function locals
    echo.__annotations__ = {"request": Request, "return": JSONResponse}
    app.post("/echo")(echo)
    return app


def __getattr__(name: str) -> Any:
    if name == "EchoService":
        return _bentoml_echo()
    if name == "fastapi_echo":
        return _fastapi_echo()
    raise AttributeError(name)


# ----------------------------------------------------------------------------------- servers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Child:
    """A server child process in its own process group (so it and its workers stop together)."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], ready_path: str, log: Path) -> None:
        self.name, self.cmd, self.env, self.ready_path, self.log = name, cmd, env, ready_path, log
        self.port = _free_port()
        self.cmd = [c.replace("{port}", str(self.port)) for c in cmd]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 240.0) -> None:
        import httpx

        self.proc = subprocess.Popen(self.cmd, env=self.env, cwd=REPO_ROOT, stdout=self.log.open("ab"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited; see {self.log}")
            try:
                if httpx.get(self.url + self.ready_path, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{self.name} not ready after {timeout}s; see {self.log}")

    def peak_rss_mb(self) -> float:
        """Sum of the peak RSS (VmHWM) of the server and its children."""
        import psutil

        if self.proc is None:
            return float("nan")
        total = 0
        try:
            root = psutil.Process(self.proc.pid)
            for p in [root, *root.children(recursive=True)]:
                try:
                    status = Path(f"/proc/{p.pid}/status").read_text()
                    hwm = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
                    total += int(hwm.split()[1])
                except (OSError, StopIteration):
                    continue
        except psutil.NoSuchProcess:
            return float("nan")
        return total / 1024

    def stop(self) -> None:
        """SIGTERM to the group; then SIGKILL to whatever of the tree is left (workers have sessions of their own)."""
        from benchmarks.server_proc import stop_tree

        if self.proc is None or self.proc.poll() is not None:
            return
        stop_tree(self.proc, timeout=20, group=True)


# ----------------------------------------------------------------------------------- load


async def _fixed_rate(url: str, headers: dict[str, str], bodies: Callable[[int], dict[str, Any]], n: int,
                      rate: float) -> tuple[list[float], float, int]:
    """Open loop: request i is due at i/rate; latency counts from the due time (no coordinated omission)."""
    import httpx

    lat: list[float] = []
    errors = 0
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=64)) as client:
        start = time.perf_counter() + 0.05

        async def one(i: int) -> None:
            nonlocal errors
            due = start + i / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            r = await client.post(url, json=bodies(i), headers=headers)
            lat.append(time.perf_counter() - due)
            errors += r.status_code != 200

        await asyncio.gather(*(one(i) for i in range(n)))
        elapsed = time.perf_counter() - start
    return lat, n / elapsed, errors


async def _saturate(url: str, headers: dict[str, str], bodies: Callable[[int], dict[str, Any]], n: int,
                    concurrency: int) -> tuple[list[float], float, int]:
    """Closed loop: ``concurrency`` clients send back-to-back until ``n`` requests are done."""
    import httpx

    lat: list[float] = []
    errors = 0
    counter = iter(range(n))
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=concurrency)) as client:

        async def worker() -> None:
            nonlocal errors
            for i in counter:
                t0 = time.perf_counter()
                r = await client.post(url, json=bodies(i), headers=headers)
                lat.append(time.perf_counter() - t0)
                errors += r.status_code != 200

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return lat, n / elapsed, errors


def _summary(lat: list[float], rps: float, errors: int) -> dict[str, float]:
    import numpy as np

    ms = np.array(lat) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99)), "throughput_rps": rps, "errors": errors, "n": len(lat)}


# ----------------------------------------------------------------------------------- setup


TRAIN_OVERRIDES = [
    "training.minimums.min_moments=200", "training.minimums.min_positives=20", "training.bootstrap_samples=20",
    "training.split.test_months=1", "training.split.calibration_months=1", "training.split.validation_months=1",
    "training.split.min_train_months=2",
]


def _prepare(work: Path, leads: int, months: int, bundle: str | None, model: str | None,
             store_url: str | None = None) -> tuple[dict[str, str], Any]:
    """Generate a CRM, get a model (train one if none given), import the CRM into a fresh event store."""
    from leadscore.config import load_settings
    from leadscore.env import OFFLINE_ENV, set_offline_env
    from leadscore.generate import generate_crm
    from leadscore.history import load_history
    from leadscore.serving.store import EventStore

    set_offline_env()
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlruns.db'}")
    os.environ.setdefault("LEADSCORE_MLFLOW_ARTIFACTS", str(work / "mlartifacts"))
    settings = load_settings(REPO_ROOT / "configs")
    crm = work / "crm"
    generate_crm(crm, n_leads=leads, months=months, seed=11, settings=settings)
    history, _ = load_history(crm, settings)
    if bundle is None and model is None:
        from leadscore.training.train import train

        print("training a small model with the real pipeline ...", flush=True)
        result = train(crm, load_settings(REPO_ROOT / "configs", TRAIN_OVERRIDES), trials=1, out_dir=work / "trained")
        bundle = str(work / "trained" / "bundle")
        print(f"  registered version {result.model_version}", flush=True)
    store_url = store_url or f"sqlite:///{work / 'events.db'}"
    store = EventStore(store_url)
    counts = store.import_history(history)
    store.close()
    print(f"event store: {counts}", flush=True)
    env = {**os.environ, **OFFLINE_ENV, "LEADSCORE_CONFIG_DIR": str(REPO_ROOT / "configs"),
           "LEADSCORE_EVENT_STORE": store_url, "LEADSCORE_API_KEYS": "bench-key",
           "BENTOML_HOME": str(work / "bentoml")}
    env.pop("LEADSCORE_BUNDLE", None)
    if bundle is not None:
        env["LEADSCORE_BUNDLE"] = str(Path(bundle).resolve())
    if model is not None:
        env["LEADSCORE_MODEL_URI"] = model
    return env, history


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--leads", type=int, default=2000)
    ap.add_argument("--months", type=int, default=9)
    ap.add_argument("--requests", type=int, default=600, help="requests per scenario and server")
    ap.add_argument("--rate", type=float, default=20.0, help="fixed open-loop rate, requests/second")
    ap.add_argument("--concurrency", type=int, default=8, help="closed-loop clients at saturation")
    ap.add_argument("--bundle", default=None, help="serve this bundle directory")
    ap.add_argument("--model", default=None, help="serve this registry URI (e.g. models:/leadscore@champion)")
    ap.add_argument("--store", default=None,
                    help="event store URL, an empty database (default: a new SQLite file in the work directory)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()

    import numpy as np

    work = Path(tempfile.mkdtemp(prefix="leadscore-bench-serving-"))
    env, history = _prepare(work, args.leads, args.months, args.bundle, args.model, args.store)
    bentoml_bin = str(Path(sys.executable).with_name("bentoml"))
    servers = {
        "leadscore": Child("leadscore", [bentoml_bin, "serve", "leadscore.serving.service:LeadScoreService", "--host",
                                         "127.0.0.1", "--port", "{port}"], env, "/ready", work / "leadscore.log"),
        "bentoml-echo": Child("bentoml-echo", [bentoml_bin, "serve", "benchmarks.serving:EchoService", "--host",
                                               "127.0.0.1", "--port", "{port}"], env, "/readyz", work / "echo.log"),
        "fastapi-echo": Child("fastapi-echo", [sys.executable, "-m", "uvicorn", "benchmarks.serving:fastapi_echo",
                                               "--host", "127.0.0.1", "--port", "{port}", "--log-level", "warning"],
                              env, "/docs", work / "fastapi.log"),
    }
    # Activities of existing leads, just after the data cut-off, each with a new id.
    rng = np.random.default_rng(5)
    lead_ids = history.leads["lead_id"].to_numpy()
    types = ["page_view", "email_open", "pricing_page_view", "email_click", "webinar_attended", "demo_request"]
    t0 = history.cutoff

    #: each phase continues the timeline: a phase that restarted at t0 would send activities older than the
    #: scores already stored, i.e. late ones, which rescore the account's colleagues (a different workload)
    phase_start = {"warm": 0, "fixed": 100_000, "sat": 200_000}

    def activity(i: int, tag: str) -> dict[str, Any]:
        at = t0 + np.timedelta64(phase_start[tag] + i, "s")
        return {"activity_id": f"bench-{tag}-{i}", "lead_id": str(lead_ids[rng.integers(len(lead_ids))]),
                "occurred_at": at.isoformat(), "type": types[i % len(types)]}

    from benchmarks.server_proc import stop_on_signals

    results: dict[str, dict[str, Any]] = {}
    with stop_on_signals(), contextlib.ExitStack() as stack:  # SIGTERM/Ctrl-C: the finally below still runs
        stack.callback(lambda: [child.stop() for child in servers.values()])
        for name, child in servers.items():
            print(f"starting {name} ...", flush=True)
            child.start()
            leadscore = name == "leadscore"
            path = "/activities" if leadscore else "/echo"
            headers = {"Authorization": "Bearer bench-key"} if leadscore else {}

            def body(i: int, tag: str, name: str = name) -> dict[str, Any]:
                a = activity(i, tag)
                return {"activity": a} if name == "bentoml-echo" else a

            url = child.url + path
            warm = asyncio.run(_saturate(url, headers, lambda i: body(i, "warm"), 30, 2))
            assert warm[2] == 0, f"{name}: warm-up requests failed"
            fixed = _summary(*asyncio.run(_fixed_rate(url, headers, lambda i: body(i, "fixed"), args.requests, args.rate)))
            sat = _summary(*asyncio.run(_saturate(url, headers, lambda i: body(i, "sat"), args.requests, args.concurrency)))
            results[name] = {"fixed_rate": fixed, "saturation": sat, "peak_rss_mb": child.peak_rss_mb()}
            child.stop()

    print(f"\nPOST single activity, loopback; fixed rate {args.rate:g}/s and saturation with {args.concurrency} "
          f"clients, {args.requests} requests each (client and servers share this machine's cores)")
    print(f"{'server':14} {'scenario':11} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'req/s':>8} {'errors':>6} {'peak RSS MB':>12}")
    for name, r in results.items():
        for scen in ("fixed_rate", "saturation"):
            s = r[scen]
            print(f"{name:14} {scen:11} {s['p50_ms']:8.2f} {s['p95_ms']:8.2f} {s['p99_ms']:8.2f} "
                  f"{s['throughput_rps']:8.1f} {s['errors']:6d} {r['peak_rss_mb']:12.0f}")
    ratios: dict[str, dict[str, float]] = {}
    for scen in ("fixed_rate", "saturation"):
        ls, be = results["leadscore"][scen], results["bentoml-echo"][scen]
        ratios[scen] = {"p50_x_bentoml_echo": ls["p50_ms"] / be["p50_ms"], "p99_x_bentoml_echo": ls["p99_ms"] / be["p99_ms"]}
        goals = " (goals <= 1.5x, <= 2x)" if scen == "fixed_rate" else ""
        print(f"leadscore / bentoml-echo ({scen}): p50 {ratios[scen]['p50_x_bentoml_echo']:.2f}x, "
              f"p99 {ratios[scen]['p99_x_bentoml_echo']:.2f}x{goals}")
    share = results["leadscore"]["saturation"]["throughput_rps"] / results["bentoml-echo"]["saturation"]["throughput_rps"]
    print(f"leadscore saturation throughput: {share:.0%} of bentoml-echo's (goal >= 40%)")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "ratios": ratios, "args": vars(args) | {"json": str(args.json)}},
                                        indent=2, default=str))
    print(f"logs and data in {work}")
    ls_fixed, echo_fixed = results["leadscore"]["fixed_rate"], results["bentoml-echo"]["fixed_rate"]
    print(json.dumps({
        "store": (args.store or "sqlite").split(":", 1)[0].split("+", 1)[0],
        "p50_ratio": round(ratios["fixed_rate"]["p50_x_bentoml_echo"], 3),
        "p99_ratio": round(ratios["fixed_rate"]["p99_x_bentoml_echo"], 3),
        "leadscore_p50_ms": round(ls_fixed["p50_ms"], 3), "leadscore_p99_ms": round(ls_fixed["p99_ms"], 3),
        "echo_p50_ms": round(echo_fixed["p50_ms"], 3), "echo_p99_ms": round(echo_fixed["p99_ms"], 3),
        "leadscore_saturation_rps": round(results["leadscore"]["saturation"]["throughput_rps"], 1),
        "echo_saturation_rps": round(results["bentoml-echo"]["saturation"]["throughput_rps"], 1),
        "saturation_share": round(share, 3),
        "leadscore_peak_rss_mb": round(results["leadscore"]["peak_rss_mb"]),
    }))


if __name__ == "__main__":
    main()
