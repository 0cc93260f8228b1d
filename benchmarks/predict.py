"""Benchmark the bundle's one-lead fast path (what serving calls per request).

Usage: python benchmarks/predict.py [--bundle DIR | --model-uri models:/leadscore@champion] [--moments FILE]
          [--reps 5000]

Without a bundle, trains a small one (generated CRM of 2,000 leads, 2 trials, nothing logged) first.
Prints, in-process:
  * ``predict_row`` (encode a feature mapping, both targets' models through LightGBM's single-row
    predictor, calibration by ``np.interp``): p50/p95/p99 — goal (issue 4 §7): p50 <= 300 µs for both targets;
  * ``reasons`` (the bundle's attribution of one row — path walk or single-row TreeSHAP — + the logistic
    terms, summed per concept, worded): p50/p95/p99;
  * one lead scored from the kernel arrays a SQLite event store (with its activity cache) reads —
    features, both models, calibration, reasons, as serving calls them (``BoundBundle.score_row``) —
    for an ordinary lead and for a lead of a 4,000-lead account (goal: p50 within 2x);
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
              f"kinds {[m.kind for m in bundle.models.values()]}, trees {[m.booster.num_trees() for m in bundle.models.values() if m.uses_trees]}")

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
        print(f"reasons ({bundle.attribution} attribution, top 3 each side): {_percentiles(lat)}")

        reasons_p50 = float(np.percentile(lat, 50) * 1e3)

        # the floor: LightGBM's own predict on one encoded row, both targets, nothing else
        encoded = {t: bundle.encode(rows.head(200), t) for t in bundle.models}
        lat = []
        for i in range(args.reps):
            t = time.perf_counter()
            for target, model in bundle.models.items():
                if model.uses_trees:
                    model.booster.predict(encoded[target][i % 200: i % 200 + 1])
            lat.append(time.perf_counter() - t)
        booster_p50 = float(np.percentile(lat, 50) * 1e3)
        print(f"floor, raw Booster.predict on one encoded row (both targets): {_percentiles(lat)}")

        # the floor of the scoring path: LightGBM's single-row predictions (both targets) and the sql
        # model's TreeSHAP (or its path walk, which gives its prediction too), on encoded rows
        from leadscore.training.row_path import SingleRowBooster

        fast = {t: SingleRowBooster(m.model_str, len(bundle.schema)) for t, m in bundle.models.items() if m.model_str}
        paths = bundle.models["sql"].path_model(len(bundle.schema)) if "sql" in fast else None
        if paths is not None:
            paths.row(encoded["sql"][0])  # compile (or load the cached) kernel
        lat = []
        for i in range(args.reps):
            t = time.perf_counter()
            for target, f in fast.items():
                if target == "sql" and bundle.attribution == "path":
                    continue  # the path walk gives the sql prediction
                f.predict(encoded[target][i % 200])
            if "sql" in fast and bundle.attribution == "shap":
                fast["sql"].contrib(encoded["sql"][i % 200])
            elif paths is not None:
                paths.row(encoded["sql"][i % 200])
            lat.append(time.perf_counter() - t)
        trees_floor_p50 = float(np.percentile(lat, 50) * 1e3)
        print(f"floor of the scoring path, single-row predictions + sql {bundle.attribution}: {_percentiles(lat)}")

        timed = _score_one(bundle, settings, tmp, args.reps // 5)
        score_one = timed["score"]
        print(f"score one lead (features from the store's arrays + both models + calibration + reasons): "
              f"{_percentiles(score_one)}  goal p50 <= 1 ms")
        print(f"  with the store read (SQLite, activity cache): {_percentiles(timed['store_score'])}")
        print(f"lead of a 4,000-lead account, score: {_percentiles(timed['big_score'])}; with the store read: "
              f"{_percentiles(timed['big_store_score'])}  goal p50 <= 2x the ordinary lead's")

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
        **{f"{k}_p50_ms": round(float(np.percentile(v, 50) * 1e3), 3) for k, v in timed.items() if k != "score"},
        "big_vs_ordinary_p50": round(float(np.percentile(timed["big_store_score"], 50)
                                           / np.percentile(timed["store_score"], 50)), 2),
        "predict_row_p50_ms": round(predict_p50, 4), "reasons_p50_ms": round(reasons_p50, 4),
        "booster_predict_p50_ms": round(booster_p50, 4),
        "trees_and_attribution_floor_p50_ms": round(trees_floor_p50, 4), "batch_rows_per_s": round(len(big) / dt),
        "attribution": bundle.attribution,
        "peak_rss_mb": round(rss_mb),
    }))


def _big_account(store: Any, history: Any, n: int = 4000) -> str:
    """Add an account of ``n`` leads to the store, each with a copy of a generated lead's activities
    (all before the cut-off); returns one of its leads."""
    import numpy as np
    import pandas as pd

    from leadscore.serving.store import to_micros

    rng = np.random.default_rng(0)
    acts = history.activities
    by_lead = acts.groupby("lead_id").indices
    donors = list(by_lead)
    at = history.cutoff - pd.Timedelta(days=200)
    with store.begin() as conn:
        store.upsert_account(conn, "big-account", {"name": "Big", "employees": 50_000}, at)
        for i in range(n):
            lead = f"big-{i:05d}"
            store.upsert_lead(conn, lead, {"account_id": "big-account", "job_title": "Engineer"}, at)
            rows = acts.iloc[by_lead[donors[int(rng.integers(len(donors)))]]]
            store.add_activities(conn, [
                {"activity_id": f"{lead}-{j}", "lead_id": lead, "occurred_at": to_micros(t), "type": typ,
                 "properties": None, "received_at": 0}
                for j, (t, typ) in enumerate(zip(rows["occurred_at"], rows["type"], strict=True))])
    return "big-00000"


def _score_one(bundle: Any, settings: Any, tmp: Path, reps: int) -> dict[str, list[float]]:
    """Wall time of what the service does per activity: the lead's kernel arrays read from a SQLite
    event store with its activity cache, features, both calibrated models, reasons ("store + score");
    and the part after the read ("score": features + models + calibration + reasons). For a lead of
    the 50 most active ones, and for a lead of a 4,000-lead account."""
    from leadscore.features.online import compute_arrays
    from leadscore.generate import generate_crm
    from leadscore.history import load_history
    from leadscore.serving.store import EventStore

    crm = tmp / "crm"
    if not (crm / "leads.parquet").exists():
        generate_crm(crm, n_leads=2000, months=12, seed=1, settings=settings)
    history, _ = load_history(crm, settings, write_rejected=False)
    store = EventStore(f"sqlite:///{tmp / 'events.db'}", cache_rows=5_000_000)
    store.import_history(history)
    big = _big_account(store, history)
    leads = list(history.activities["lead_id"].value_counts().index[:50])
    as_of = history.cutoff
    out: dict[str, list[float]] = {"score": [], "store_score": [], "big_store_score": [], "big_score": []}
    with store.read() as conn:
        for label, pool in (("", leads), ("big_", [big])):
            arrays = {lead: store.load_lead(conn, lead, as_of, settings) for lead in pool}
            for i in range(reps + 50):
                lead = pool[i % len(pool)]
                t = time.perf_counter()
                a = store.load_lead(conn, lead, as_of, settings)
                t1 = time.perf_counter()
                row = compute_arrays(a, [as_of], settings)[0]
                bundle.score_row(row)
                t2 = time.perf_counter()
                if i >= 50:  # the first pass is warm-up
                    out[f"{label}store_score"].append(t2 - t)
                    out[f"{label}score"].append(t2 - t1)
            del arrays
    store.close()
    return out


if __name__ == "__main__":
    main()
