"""Benchmark the feature build on a Dask cluster against the single-machine build.

Usage: python benchmarks/scale.py [--leads 1000000] [--baseline-leads 100000] [--months 12] [--seed 7]
          [--workers 2] [--memory-limit 6GB] [--parts N] [--dir /tmp/leadscore-bench-scale]

Goal (issue 15): 1M leads (~100M activities) built on a 2-worker ``LocalCluster`` with each worker's peak
RSS <= 6 GB, and per-core throughput >= 0.7x the single-machine path's at 100k leads.

Steps, each CRM generated once into ``--dir`` and kept:

* the big CRM in the account-partitioned layout: ``generate_crm(..., partitions=N)`` when the generator
  takes it, else generated as one file per table and shuffled into parts by the engine's own
  :func:`features.dask_parts.repartition` (on a cluster of its own, so it weighs on no measured peak);
* the Dask build (what ``leadscore features build --engine dask`` does: every part loaded, validated
  and built on a worker, streamed into one Parquet file by the client), on a fresh ``LocalCluster`` of
  ``--workers`` single-threaded worker processes;
* the single-machine build of ``--baseline-leads`` (load + validate + build + write, what ``leadscore
  features build`` does) in a child process, so its memory and numba threads are its own.

Peak RSS is each process's high-water mark (``VmHWM``), reset just before the measured step (Linux).
Per-core throughput is activities per second divided by the cores the path used (the Dask workers'
threads; the single machine's numba threads). The last line is JSON: ``leads``, ``activities``,
``wall_s``, ``peak_worker_rss_gb``, ``peak_client_rss_gb``, ``per_core_ratio`` and the parts.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def reset_peak() -> None:
    """Reset this process's peak RSS (``VmHWM``) to its current RSS (Linux ``clear_refs`` 5)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_gb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024**2
    return float("nan")


def _generated(directory: Path, leads: int, months: int, seed: int, parts: int | None) -> Path:
    """A generated CRM at ``directory`` (one file per table, or partitioned into ``parts``), made once."""
    from leadscore.config import load_settings
    from leadscore.features.dask_parts import partition_count
    from leadscore.generate import generate_crm

    settings = load_settings()
    if parts is None:
        if not (directory / "activities.parquet").exists():
            t = time.perf_counter()
            generate_crm(directory, n_leads=leads, months=months, seed=seed, settings=settings)
            print(f"generated {directory} in {time.perf_counter() - t:.1f}s", flush=True)
        return directory
    if partition_count(directory) == parts:
        return directory
    t = time.perf_counter()
    if "partitions" in inspect.signature(generate_crm).parameters:
        generate: Any = generate_crm  # the partitioned generator (issue 15) takes ``partitions``
        generate(directory, n_leads=leads, months=months, seed=seed, settings=settings, partitions=parts)
    else:  # one file per table first, then the engine's shuffle into the layout
        from leadscore.features.dask_engine import DaskOptions, dask_client
        from leadscore.features.dask_parts import repartition

        flat = _generated(directory.with_name(directory.name + "-flat"), leads, months, seed, None)
        with dask_client(DaskOptions(workers=2)) as client:
            repartition(flat, directory, parts, client)
    print(f"partitioned {directory} into {parts} parts in {time.perf_counter() - t:.1f}s", flush=True)
    return directory


def dask_build(crm: Path, workers: int, memory_limit: str) -> dict[str, Any]:
    """The Dask build on a fresh cluster: wall time, activities, worker and client peaks."""
    from leadscore.config import load_settings
    from leadscore.features.dask_engine import DaskOptions, ParquetSink, build_dataset_dask, dask_client

    settings = load_settings()
    out = Path(tempfile.mkdtemp(prefix="leadscore-scale-")) / "features.parquet"
    with dask_client(DaskOptions(workers=workers, memory_limit=memory_limit)) as client:
        client.run(reset_peak)
        reset_peak()
        sink = ParquetSink(out)
        t = time.perf_counter()
        build = build_dataset_dask(crm, settings, client, sink)
        sink.close()
        wall = time.perf_counter() - t
        worker_peaks = client.run(peak_gb)
        threads = sum(client.nthreads().values())
    out.unlink()
    return {"wall_s": round(wall, 2), "leads": build.summary.leads, "activities": build.summary.activities,
            "moments": build.summary.moments, "parts": build.parts, "cores": threads,
            "peak_worker_rss_gb": round(max(worker_peaks.values()), 3),
            "worker_peaks_gb": {k: round(v, 3) for k, v in worker_peaks.items()},
            "peak_client_rss_gb": round(peak_gb(), 3)}


def single_build(crm: Path) -> dict[str, Any]:
    """The single-machine ``features build`` (load, validate, build, write) in this process."""
    import numba

    from leadscore.config import load_settings
    from leadscore.features.build import build_dataset
    from leadscore.history import load_history

    settings = load_settings()
    out = Path(tempfile.mkdtemp(prefix="leadscore-scale-")) / "features.parquet"
    reset_peak()
    t = time.perf_counter()
    history, _ = load_history(crm, settings, write_rejected=False)
    frame, summary = build_dataset(history, settings)
    frame.to_parquet(out, index=False)
    wall = time.perf_counter() - t
    out.unlink()
    return {"wall_s": round(wall, 2), "leads": summary.leads, "activities": summary.activities,
            "moments": summary.moments, "cores": numba.get_num_threads(), "peak_rss_gb": round(peak_gb(), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leads", type=int, default=1_000_000)
    parser.add_argument("--baseline-leads", type=int, default=100_000)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-limit", default="6GB", help="per worker (Dask pauses, then restarts, a worker "
                                                             "over it)")
    parser.add_argument("--parts", type=int, default=None, help="default: 25k leads a part, at least 4 per worker")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/leadscore-bench-scale"))
    parser.add_argument("--single", type=Path, default=None, help=argparse.SUPPRESS)  # the child's entry
    args = parser.parse_args()

    from leadscore.env import set_offline_env

    set_offline_env()
    if args.single is not None:
        print(json.dumps(single_build(args.single)))
        return
    parts = args.parts or max(4 * args.workers, -(-args.leads // 25_000))
    big = _generated(args.dir / f"crm-{args.leads}-parts{parts}", args.leads, args.months, args.seed, parts)
    base = _generated(args.dir / f"crm-{args.baseline_leads}", args.baseline_leads, args.months, args.seed, None)

    dask = dask_build(big, args.workers, args.memory_limit)
    print(f"dask: {dask['leads']:,} leads, {dask['activities']:,} activities, {dask['parts']} parts on "
          f"{dask['cores']} worker cores in {dask['wall_s']:.1f}s; peak RSS per worker {dask['worker_peaks_gb']} GB, "
          f"client {dask['peak_client_rss_gb']:.2f} GB", flush=True)
    child = subprocess.run([sys.executable, __file__, "--single", str(base)], check=True, capture_output=True,
                           text=True, env={**os.environ})
    single = json.loads(child.stdout.strip().splitlines()[-1])
    print(f"single machine: {single['leads']:,} leads, {single['activities']:,} activities in {single['wall_s']:.1f}s "
          f"on {single['cores']} cores; peak RSS {single['peak_rss_gb']:.2f} GB", flush=True)
    per_core = {name: r["activities"] / r["wall_s"] / r["cores"] for name, r in (("dask", dask), ("single", single))}
    ratio = per_core["dask"] / per_core["single"]
    print(f"throughput per core: dask {per_core['dask']:,.0f} activities/s, single machine "
          f"{per_core['single']:,.0f} activities/s: ratio {ratio:.2f} (goal >= 0.7); peak worker RSS "
          f"{dask['peak_worker_rss_gb']:.2f} GB (goal <= 6)", flush=True)
    print(json.dumps({"leads": dask["leads"], "activities": dask["activities"], "wall_s": dask["wall_s"],
                      "peak_worker_rss_gb": dask["peak_worker_rss_gb"], "peak_client_rss_gb": dask["peak_client_rss_gb"],
                      "per_core_ratio": round(ratio, 3), "parts": dask["parts"], "workers": args.workers,
                      "baseline_leads": single["leads"], "baseline_wall_s": single["wall_s"]}))


if __name__ == "__main__":
    main()
