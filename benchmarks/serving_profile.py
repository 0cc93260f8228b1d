"""Where the time of one ``POST /activities`` goes, in process (no HTTP), phase by phase.

Usage: python benchmarks/serving_profile.py [--leads 2000] [--months 9] [--requests 400]
          [--bundle DIR | --model URI] [--gap-ms 0] [--cprofile OUT]

Builds the same generated CRM, event store and model as ``benchmarks/serving.py``, starts the service
state the way a worker does (``serving.service.build_state``: model, event store, activity cache warmed),
then runs what the route runs for single activities of random existing leads (validation,
``state.ingest_score_answer``: store, score, append, the answer's trend read; the JSON answer), timing
each phase and the steps inside
with ``perf_counter`` (wall) and the request's thread CPU time: the late check of the ingest
transaction, the history read, the stage lookups, the features and model, the score insert, the
freshness check, the previous scores of the trend. ``--gap-ms`` sleeps
between requests: a request after an idle gap costs about twice the CPU of back-to-back ones (cold
caches), which is what a fixed request rate sees. Requests of leads in accounts of 100+ leads are also
summarised apart (they read the most colleagues' activities). Also counted per request (SQLite):
the SQL statements run (``serving.sql_count``: the work's own, and the ``BEGIN``/``COMMIT`` of its
transactions) and the connections checked out of the pool.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a script: ``benchmarks.serving`` must be importable
    sys.path.insert(0, str(REPO_ROOT))


#: requests whose SQL is counted (after the timed ones)
COUNTED = 100


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--leads", type=int, default=2000)
    ap.add_argument("--months", type=int, default=9)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--bundle", default=None)
    ap.add_argument("--model", default=None)
    ap.add_argument("--gap-ms", type=float, default=0.0, help="idle time between requests")
    ap.add_argument("--cprofile", type=Path, default=None, help="also write a cProfile of the timed requests")
    args = ap.parse_args()

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import numpy as np

    from benchmarks.serving import _prepare

    work = Path(tempfile.mkdtemp(prefix="leadscore-profile-serving-"))
    env, history = _prepare(work, args.leads, args.months, args.bundle, args.model)
    os.environ.update({k: v for k, v in env.items() if k.startswith(("LEADSCORE_", "BENTOML_", "MLFLOW_"))})

    import leadscore.serving.scoring as S
    from leadscore.serving.http import parse_json
    from leadscore.serving.routes_scoring import json_response, request_context, validate_activities
    from leadscore.serving.schemas import ActivitiesOut
    from leadscore.serving.service import build_state
    from leadscore.serving.sql_count import SqlCounter
    from leadscore.serving.state import ingest_score_answer

    st = build_state()
    wall: dict[str, list[float]] = defaultdict(list)
    cpu: dict[str, list[float]] = defaultdict(list)

    def timed(obj: Any, name: str, label: str) -> None:
        fn = getattr(obj, name)

        def wrapper(*a: Any, **k: Any) -> Any:
            t, c = time.perf_counter(), time.thread_time()
            try:
                return fn(*a, **k)
            finally:
                wall[label].append(time.perf_counter() - t)
                cpu[label].append(time.thread_time() - c)

        setattr(obj, name, wrapper)

    import leadscore.serving.rescore as R
    import leadscore.serving.state as state_mod
    import leadscore.serving.trail as T

    timed(state_mod, "_ingest_and_score", "ingest + score (below)")
    timed(state_mod.ServingState, "rescore_after_ingest", "score + append (below)")
    timed(state_mod, "mark_late", "late check (ingest txn)")
    timed(R, "score_with_fingerprint", "score read + model")
    timed(st.store, "load_lead_marked", "history read")
    timed(st.store, "current_stage", "stage lookups")
    timed(st.scorer, "score", "features + model")
    timed(S, "_online_features", "features")
    timed(st.store, "append_score", "score insert")
    timed(R, "still_current", "freshness check")
    timed(T, "answers", "answers (trend read)")

    leads = history.leads
    lead_ids = leads["lead_id"].to_numpy()
    sizes = leads.groupby("account_id")["lead_id"].transform("count").fillna(1).to_numpy()
    big = {str(lid) for lid, n in zip(lead_ids, sizes, strict=True) if n >= 100}
    rng = np.random.default_rng(5)
    types = ["page_view", "email_open", "pricing_page_view", "email_click", "webinar_attended", "demo_request"]
    t0 = history.cutoff
    totals: dict[str, list[float]] = defaultdict(list)

    def phase(label: str, fn: Callable[[], Any]) -> Any:
        t, c = time.perf_counter(), time.thread_time()
        out = fn()
        wall[label].append(time.perf_counter() - t)
        cpu[label].append(time.thread_time() - c)
        return out

    def one(i: int) -> None:
        lead_id = str(lead_ids[rng.integers(len(lead_ids))])
        raw = json.dumps({"activity_id": f"profile-{i}", "lead_id": lead_id, "type": types[i % len(types)],
                          "occurred_at": (t0 + np.timedelta64(i, "s")).isoformat()}).encode()
        t, c = time.perf_counter(), time.thread_time()
        parsed = phase("parse + validate", lambda: validate_activities(
            [parse_json(raw, 32)], "", False, 32_000, request_context(st)))
        stored, dupes, _, scores = phase("ingest_score_answer (all)", lambda: ingest_score_answer(st, parsed))
        phase("answer JSON", lambda: json_response(ActivitiesOut(
            stored=stored, duplicates=dupes, rejected=0, scores=scores, errors=[])).body)
        w, u = time.perf_counter() - t, time.thread_time() - c
        for key in ("all", "big account" if lead_id in big else "other"):
            totals[f"TOTAL wall {key}"].append(w)
            totals[f"TOTAL cpu {key}"].append(u)
        if args.gap_ms:
            time.sleep(args.gap_ms / 1000)

    for i in range(30):  # warm-up
        one(i)
    for d in (wall, cpu, totals):
        d.clear()
    profiler = None
    if args.cprofile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    for i in range(30, 30 + args.requests):
        one(i)
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(str(args.cprofile))
    timings = [{label: list(values) for label, values in d.items()} for d in (wall, cpu, totals)]
    # SQL counted apart, after the timed requests (the trace callback costs time of its own)
    counted = 30 + args.requests
    with SqlCounter(st.store.engine) as sql:
        one(counted)
        sample, sample_checkouts = list(sql.statements), sql.checkouts
        sql.reset()
        for i in range(counted + 1, counted + 1 + COUNTED):
            one(i)
    for d, kept in zip((wall, cpu, totals), timings, strict=True):
        d.clear()
        d.update(kept)

    def row(label: str, values: list[float], per: int | None = None) -> str:
        a = np.array(values) * 1e3
        per_req = a.sum() / (per or args.requests)
        return (f"{label:26} {per_req:9.3f} {np.percentile(a, 50):8.3f} {np.percentile(a, 95):8.3f} "
                f"{np.percentile(a, 99):8.3f}")

    print(f"\n{args.requests} single-activity requests in process, gap {args.gap_ms:g} ms; ms (per request = "
          f"time of the phase / requests)")
    print(f"{'phase (wall)':26} {'mean':>9} {'p50':>8} {'p95':>8} {'p99':>8}")
    for label, values in wall.items():
        print(row(label, values))
    print(f"{'phase (thread CPU)':26}")
    for label, values in cpu.items():
        print(row(label, values))
    for label, values in totals.items():
        print(row(label, values, len(values)) + f"   ({len(values)} requests)")
    n = COUNTED
    print(f"SQL per request: {len(sql.queries) / n:.2f} statements + {sql.transactions / n:.2f} transactions "
          f"({dict(sorted(sql.kinds().items()))} over {n} requests), {sql.checkouts / n:.2f} connection checkouts")
    print(f"one request's SQL ({sample_checkouts} checkouts):")
    for stmt in sample:
        print("   ", " ".join(stmt.split())[:150])
    if st.store.cache is not None:
        print(f"activity cache: {st.store.cache.rows} rows, {st.store.cache.stats}")
    st.store.close()
    print(f"data in {work}")


if __name__ == "__main__":
    main()
