"""Benchmark the CRM generator: wall time, activities per second and peak memory.

Usage: python benchmarks/generate.py [--leads 100000] [--months 18] [--out /tmp/bench-crm]
Goal (issue 2): 100k leads / ~10M activities in under 2 minutes on 2 cores, under 4 GB.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

from leadscore.config import load_settings
from leadscore.generate import generate_crm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--months", type=int, default=18)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("/tmp/leadscore-bench-crm"))
    args = parser.parse_args()
    settings = load_settings()
    start = time.perf_counter()
    summary = generate_crm(args.out, n_leads=args.leads, months=args.months, seed=args.seed, settings=settings)
    seconds = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    acts = int(summary["activities"])  # type: ignore[call-overload]
    print(f"leads={args.leads} months={args.months} activities={acts:,} ground_truth_rows={summary['ground_truth_rows']:,}")
    print(f"wall_seconds={seconds:.1f} activities_per_second={acts / seconds:,.0f} peak_rss_gb={peak_gb:.2f}")
    print(f"funnel: lead->mql={summary['lead_to_mql']:.3f} mql->sql={summary['mql_to_sql']:.3f} "
          f"sql->opp={summary['sql_to_opportunity']:.3f} opp->won={summary['opportunity_to_won']:.3f}")
    print(json.dumps({"wall_s": round(seconds, 2), "activities": acts, "activities_per_s": round(acts / seconds),
                      "peak_rss_gb": round(peak_gb, 2)}))


if __name__ == "__main__":
    main()
