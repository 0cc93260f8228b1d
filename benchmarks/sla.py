"""Benchmark the SLA code: stage() latency (called on every API score), threshold fitting and the report.

Usage: python benchmarks/sla.py [--leads 50000] [--moments-per-lead 8] [--stage-calls 200000]
Prints per-call latency percentiles of ``StagePolicy.stage``, moments per second of
``fit_stage_policy`` (all three policies) and wall time of ``build_sla_report``, plus peak RSS.
Scored frames are synthetic (calibrated probabilities, noisy rule score): the cost depends on the
number of moments and leads, not on where the scores came from.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from leadscore.config import load_settings
from leadscore.training.bundle import StagePolicy
from leadscore.training.config import MQLPolicy
from leadscore.training.report import build_sla_report
from leadscore.training.sla import fit_stage_policy


def scored_frame(n_leads: int, per_lead: int, start: str, months: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp(start, tz="UTC")
    span = (t0 + pd.DateOffset(months=months) - t0).total_seconds()
    q = rng.beta(1.0, 8.0, n_leads)
    k = rng.integers(1, 2 * per_lead, n_leads)
    lead = np.repeat(np.arange(n_leads), k)
    secs = rng.uniform(0, span, len(lead))
    p = np.clip(q[lead] * rng.uniform(0.5, 1.5, len(lead)), 0, 1)
    return pd.DataFrame(
        {
            "lead_id": np.char.add("L", lead.astype(str)),
            "as_of": t0 + pd.to_timedelta(secs, unit="s"),
            "p_sql": p,
            "p_opportunity": p * 0.5,
            "rule_score": 400 * q[lead] + rng.normal(0, 80, len(lead)),
            "y_sql": (rng.random(len(lead)) < p).astype(float),
            "y_opp": (rng.random(len(lead)) < p * 0.5).astype(float),
            "source": np.array(["web", "event", "paid", "referral"])[rng.integers(0, 4, n_leads)][lead],
            "industry": np.array(["saas", "retail", "finance"])[rng.integers(0, 3, n_leads)][lead],
            "employee_band": np.array(["1-49", "50-249", "250+"])[rng.integers(0, 3, n_leads)][lead],
            "days_since_created": rng.uniform(0, 200, len(lead)),
        }
    )


def bench_stage(calls: int, figures: dict[str, float]) -> None:
    policy = StagePolicy(mql_threshold=0.2, sql_threshold=0.4, hysteresis=0.1, rule_mql_threshold=400.0)
    rng = np.random.default_rng(0)
    p_sql, p_opp = rng.random(calls).tolist(), (rng.random(calls) * 0.6).tolist()
    stages = ["lead", "mql", "sql", None, "recycled"]
    lat = np.empty(calls)
    clock = time.perf_counter_ns
    for i in range(calls):
        t = clock()
        policy.stage(p_sql[i], p_opp[i], stages[i % 5], days_in_stage=float(i % 60))
        lat[i] = clock() - t
    p50, p99, p999 = np.percentile(lat, [50, 99, 99.9]) / 1000
    figures["stage_p50_us"], figures["stage_p99_us"] = round(float(p50), 3), round(float(p99), 3)
    print(f"stage(): calls={calls:,} p50={p50:.2f}us p99={p99:.2f}us p99.9={p999:.2f}us "
          f"throughput={calls / (lat.sum() / 1e9):,.0f}/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--leads", type=int, default=50_000)
    parser.add_argument("--moments-per-lead", type=int, default=8)
    parser.add_argument("--stage-calls", type=int, default=200_000)
    parser.add_argument("--bootstrap", type=int, default=200)
    args = parser.parse_args()
    settings = load_settings()
    settings = settings.model_copy(
        update={"training": settings.training.model_copy(update={"bootstrap_samples": args.bootstrap})}
    )
    figures: dict[str, float] = {}
    bench_stage(args.stage_calls, figures)

    full = scored_frame(args.leads, args.moments_per_lead, "2026-03-01", 6, seed=1)
    split = pd.Timestamp("2026-07-01", tz="UTC")
    cal, test = full[full["as_of"] < split], full[full["as_of"] >= split]
    for kind in ("capacity", "target_rate", "expected_value"):
        start = time.perf_counter()
        policy = fit_stage_policy(cal, settings, override=MQLPolicy(kind=kind, capacity_per_month=args.leads // 20))
        seconds = time.perf_counter() - start
        print(f"fit_stage_policy[{kind}]: moments={len(cal):,} leads={cal['lead_id'].nunique():,} "
              f"bootstrap={args.bootstrap} wall_seconds={seconds:.2f} moments_per_second={len(cal) / seconds:,.0f} "
              f"threshold={policy.mql_threshold:.4f}")
        figures[f"fit_{kind}_s"] = round(seconds, 3)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        data = build_sla_report(test, policy, settings, Path(tmp) / "sla.html", warmup=cal)
        seconds = time.perf_counter() - start
        size = (Path(tmp) / "sla.html").stat().st_size
    print(f"build_sla_report: test_moments={len(test):,} warmup_moments={len(cal):,} wall_seconds={seconds:.2f} "
          f"html_mb={size / 1e6:.1f} ratio_at_rule_volume={data['acceptance']['ratio']}")
    figures["report_s"] = round(seconds, 3)
    figures["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2)
    print(f"peak_rss_gb={figures['peak_rss_gb']:.2f}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
