"""Benchmark the monthly retrain at production size.

Usage: python benchmarks/training.py [--crm DIR] [--leads 100000] [--months 12] [--seed 7] [--trials 30]
          [--moments 1000000]

Generates the CRM into ``--crm`` with ``leadscore.generate`` if it is not there yet (about 10.8 training
moments per lead, so 100k leads give ~1M moments), builds the moments dataset (timed separately: that
is the features benchmark), keeps at most ``--moments`` of them, then times one full
``train_from_dataset`` in a private MLflow SQLite store: both targets, ``--trials`` Optuna trials each on a
time-stratified sample, final fits on all training months, calibration, baselines with bootstrap CIs,
artifacts, pyfunc registration. Goal (issue 4): 1M moments, 30 trials, <= 15 min on 2 cores, peak RSS
<= 8 GB. Peak RSS is the process's max RSS (it includes the loaded history and the dataset).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import tempfile
import time
from pathlib import Path


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def _current_gb() -> float:
    """Resident memory now (Linux), to see which phase holds the memory."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024**3
    except (OSError, ValueError, IndexError):
        return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crm", type=Path, default=Path(tempfile.gettempdir()) / "leadscore-bench-crm-100k")
    ap.add_argument("--leads", type=int, default=100_000)
    ap.add_argument("--months", type=int, default=12)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--moments", type=int, default=1_000_000)
    args = ap.parse_args()

    store = Path(tempfile.mkdtemp(prefix="leadscore-bench-mlflow-"))
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlruns.db'}")
    os.environ.setdefault("LEADSCORE_MLFLOW_ARTIFACTS", str(store / "artifacts"))

    import pandas as pd

    from leadscore.config import load_settings
    from leadscore.env import set_offline_env
    from leadscore.features.build import build_dataset
    from leadscore.features.schema import feature_schema, schema_hash
    from leadscore.generate import generate_crm
    from leadscore.history import load_history
    from leadscore.training.train import GROUND_TRUTH_FILE, train_from_dataset

    set_offline_env()
    settings = load_settings(None, [f"training.trials={args.trials}"])
    if not (args.crm / "manifest.json").exists():
        t = time.perf_counter()
        generate_crm(args.crm, n_leads=args.leads, months=args.months, seed=args.seed, settings=settings)
        print(f"generated {args.leads:,} leads / {args.months} months in {time.perf_counter() - t:.0f}s")
    t = time.perf_counter()
    history, _ = load_history(args.crm, settings)
    dataset, _ = build_dataset(history, settings)
    if len(dataset) > args.moments:
        dataset = dataset.sort_values("as_of").sample(n=args.moments, random_state=0).sort_index()
    cutoff = history.cutoff
    del history  # training needs only the moments; the CLI's train() drops the history the same way
    gc.collect()
    truth_path = args.crm / GROUND_TRUTH_FILE
    truth = pd.read_parquet(truth_path) if truth_path.exists() else None
    print(f"moments dataset: {len(dataset):,} rows x {dataset.shape[1]} columns "
          f"(load + build {time.perf_counter() - t:.0f}s, not part of the training time); RSS so far {_rss_gb():.2f} GB")

    phases: list[tuple[float, str]] = []
    t0 = time.perf_counter()

    def progress(event: str, payload: object) -> None:
        if event == "phase":
            phases.append((time.perf_counter() - t0, str(payload)))
            print(f"  {phases[-1][0]:7.1f}s  RSS {_current_gb():.2f} GB (peak {_rss_gb():.2f})  {payload}", flush=True)

    result = train_from_dataset(dataset, feature_schema(settings), settings, cutoff,
                                schema_hash=schema_hash(settings), truth=truth, progress=progress)
    total = time.perf_counter() - t0
    print(f"\nretrain wall time: {total / 60:.1f} min for {len(dataset):,} moments, {args.trials} trials per target "
          f"(goal <= 15 min)")
    print(f"peak RSS: {_rss_gb():.2f} GB (goal <= 8 GB)")
    print(f"throughput: {len(dataset) / total:,.0f} moments/s end to end")
    for target, tr in result.targets.items():
        m = tr.metrics
        print(f"{target}: rows {tr.rows}, trials {tr.tune.n_trials} ({tr.tune.n_pruned} pruned), "
              f"final rounds {tr.model.params.get('num_iterations')}, shipped {tr.choice.kind} AUC {m['shipped']['roc_auc']} "
              f"(LightGBM {m['lightgbm']['roc_auc'].value:.4f}) vs rule {m['rule']['roc_auc']}, "
              f"ECE {m['shipped']['ece'].value:.4f}, "
              f"share of ceiling {tr.share_of_ceiling_lift}")
    figures: dict[str, object] = {"train_s": round(total, 1), "moments": len(dataset), "trials": args.trials,
                                  "peak_rss_gb": round(_rss_gb(), 2)}
    for target, tr in result.targets.items():
        figures[f"{target}_model"] = tr.choice.kind
        figures[f"{target}_auc"] = round(float(tr.metrics["shipped"]["roc_auc"].value), 4)
        figures[f"{target}_rule_auc"] = round(float(tr.metrics["rule"]["roc_auc"].value), 4)
        figures[f"{target}_ece"] = round(float(tr.metrics["shipped"]["ece"].value), 4)
        figures[f"{target}_share_of_ceiling_lift"] = tr.share_of_ceiling_lift
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
