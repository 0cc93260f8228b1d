"""Benchmark the bundle's one-lead fast path (what serving calls per request).

Usage: python benchmarks/predict.py [--bundle DIR | --model-uri models:/leadscore@champion] [--moments FILE]
          [--reps 5000]

Without a bundle, trains a small one (generated CRM of 2,000 leads, 2 trials, nothing logged) first.
Prints, in-process:
  * ``predict_row`` (encode a feature mapping, ``Booster.predict`` on a float64 row for both targets,
    calibration by ``np.interp``): p50/p95/p99 — goal (issue 4 §7): p50 <= 300 µs for both targets;
  * ``reasons`` (LightGBM pred_contrib for one row + templates): p50/p95/p99;
  * batch ``predict`` throughput in rows/s;
  * peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def _percentiles(samples: list[float]) -> str:
    us = np.array(samples) * 1e6
    return (f"p50={np.percentile(us, 50):.0f}µs p95={np.percentile(us, 95):.0f}µs "
            f"p99={np.percentile(us, 99):.0f}µs (n={len(us)})")


def _small_bundle(settings: object, tmp: Path) -> Path:
    import pandas as pd

    from leadscore.features.build import build_dataset
    from leadscore.features.schema import feature_schema, schema_hash
    from leadscore.generate import generate_crm
    from leadscore.history import load_history
    from leadscore.training.train import train_from_dataset

    generate_crm(tmp / "crm", n_leads=2000, months=12, seed=1, settings=settings)  # type: ignore[arg-type]
    history, _ = load_history(tmp / "crm", settings)  # type: ignore[arg-type]
    dataset, _ = build_dataset(history, settings)  # type: ignore[arg-type]
    result = train_from_dataset(dataset, feature_schema(settings), settings, history.cutoff,  # type: ignore[arg-type]
                                schema_hash=schema_hash(settings), log_to_mlflow=False, out_dir=tmp / "out",  # type: ignore[arg-type]
                                trials=2)
    dataset.to_parquet(tmp / "moments.parquet")
    del pd
    return result.bundle.save(tmp / "bundle")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path)
    ap.add_argument("--model-uri")
    ap.add_argument("--moments", type=Path, help="Parquet of feature rows to score (default: the small CRM's)")
    ap.add_argument("--reps", type=int, default=5000)
    args = ap.parse_args()

    import pandas as pd

    from leadscore.config import load_settings
    from leadscore.env import set_offline_env
    from leadscore.training.bundle import ScoringBundle
    from leadscore.training.registry import load_bundle

    set_offline_env()
    settings = load_settings(None, ["training.minimums.min_moments=500", "training.minimums.min_positives=30"])
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        if args.model_uri:
            bundle = load_bundle(args.model_uri, settings)
            rows = None
        else:
            bundle_dir = args.bundle or _small_bundle(settings, tmp)
            bundle = ScoringBundle.load(bundle_dir).bind(settings)
            rows = pd.read_parquet(tmp / "moments.parquet") if (tmp / "moments.parquet").exists() else None
        if args.moments is not None:
            rows = pd.read_parquet(args.moments)
        if rows is None:
            rng = np.random.default_rng(0)
            rows = pd.DataFrame({s["name"]: (rng.choice(["a", "b"], 2000) if s["dtype"] == "str"
                                             else rng.exponential(2.0, 2000)) for s in bundle.schema})
        rows = rows[bundle.feature_names].head(2000)
        records = rows.to_dict("records")
        print(f"bundle: {len(bundle.schema)} features, targets {list(bundle.models)}, "
              f"trees {[m.booster.num_trees() for m in bundle.models.values()]}")

        for r in records[:200]:  # warm-up
            bundle.predict_row(r)
        lat = []
        for i in range(args.reps):
            r = records[i % len(records)]
            t = time.perf_counter()
            bundle.predict_row(r)
            lat.append(time.perf_counter() - t)
        print(f"predict_row (both targets, calibrated): {_percentiles(lat)}  goal p50 <= 300µs")
        predict_p50 = float(np.percentile(lat, 50) * 1e3)

        lat = []
        for i in range(min(args.reps, 2000)):
            r = records[i % len(records)]
            t = time.perf_counter()
            bundle.reasons(r)
            lat.append(time.perf_counter() - t)
        print(f"reasons (pred_contrib, top 3 each side): {_percentiles(lat)}")

        reasons_p50 = float(np.percentile(lat, 50) * 1e3)

        # the floor: LightGBM's own predict on one encoded row, both targets, nothing else
        encoded = {t: bundle.encode(rows.head(200), t) for t in bundle.models}
        lat = []
        for i in range(args.reps):
            t = time.perf_counter()
            for target, model in bundle.models.items():
                model.booster.predict(encoded[target][i % 200: i % 200 + 1])
            lat.append(time.perf_counter() - t)
        booster_p50 = float(np.percentile(lat, 50) * 1e3)
        print(f"floor, raw Booster.predict on one encoded row (both targets): {_percentiles(lat)}")

        score_one = _score_one(bundle, settings, tmp, args.reps // 5)
        print(f"score one lead (online features + both models + calibration + reasons): {_percentiles(score_one)}")

        big = pd.concat([rows] * 50, ignore_index=True)
        t = time.perf_counter()
        bundle.predict(big)
        dt = time.perf_counter() - t
        print(f"batch predict: {len(big):,} rows in {dt:.2f}s = {len(big) / dt:,.0f} rows/s")
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: {rss_mb:.0f} MB")
    print(json.dumps({
        "score_one_p50_ms": round(float(np.percentile(score_one, 50) * 1e3), 3),
        "score_one_p99_ms": round(float(np.percentile(score_one, 99) * 1e3), 3),
        "predict_row_p50_ms": round(predict_p50, 4), "reasons_p50_ms": round(reasons_p50, 4),
        "booster_predict_p50_ms": round(booster_p50, 4), "batch_rows_per_s": round(len(big) / dt),
        "peak_rss_mb": round(rss_mb),
    }))


def _score_one(bundle: Any, settings: Any, tmp: Path, reps: int) -> list[float]:
    """Wall time of what the service does per activity once the history is read: features of one lead at
    one moment from its (account's) history, both calibrated models, reasons."""
    from leadscore.features.online import compute_one
    from leadscore.features.testing import sub_histories
    from leadscore.generate import generate_crm
    from leadscore.history import load_history

    crm = tmp / "crm"
    if not (crm / "leads.parquet").exists():
        generate_crm(crm, n_leads=2000, months=12, seed=1, settings=settings)
    history, _ = load_history(crm, settings, write_rejected=False)
    make = sub_histories(history)
    leads = history.activities["lead_id"].value_counts().index[:50]
    subs = [(lead, make(lead)) for lead in leads]
    lat = []
    for i in range(reps + 50):
        lead, sub = subs[i % len(subs)]
        t = time.perf_counter()
        row = compute_one(sub, lead, history.cutoff, settings)
        bundle.predict_row(row)
        bundle.reasons(row)
        if i >= 50:  # the first pass over the leads is warm-up
            lat.append(time.perf_counter() - t)
    return lat


if __name__ == "__main__":
    main()
