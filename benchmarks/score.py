"""Benchmark batch scoring (``leadscore score``) against a raw ``Booster.predict`` over the same rows.

Usage: python benchmarks/score.py [--crm DIR --bundle DIR] [--leads 4000] [--reps 3]

Without ``--crm``/``--bundle``, generates a CRM and trains a small bundle (2 trials, nothing logged).
Times, over the feature rows of every open lead at the cut-off, built as ``leadscore score`` builds them
(:func:`features.engine.compute_features` with ``coded=True``: string features as categoricals over the
run's dictionaries), best of ``--reps`` rounds (each round calls the booster, scoring without reasons and
scoring in turn, so all three are timed through the same drifts of a shared machine):

* ``rows_per_s``: :func:`training.batch_score.score_frame`, what ``leadscore score`` does to each chunk
  of feature rows: encode, both targets' calibrated probabilities, the stage policy with hysteresis,
  the contributions (the bundle's ``attribution``: path walk or TreeSHAP) and the worded top-3 reasons;
* ``booster_rows_per_s``: ``Booster.predict`` of both targets' boosters over the same rows already
  encoded (the floor any scorer pays), and ``ratio`` of the two (goal: >= 0.5);
* ``no_reasons_rows_per_s``/``no_reasons_ratio``: ``leadscore score --no-reasons`` (probabilities and
  stages; TreeSHAP costs ~30-50x a prediction, the path attribution about one; the reasons are one
  compiled pass per chunk over sentences worded once per run); ``end_to_end_rows_per_s``: the whole
  command (load, features, scoring, writing Parquet); ``attribution``: the bundle's;
* ``cpu_ms``: the same calls' best CPU time (all threads), and ``cpu_ratio`` the booster's over scoring's:
  on a shared machine the wall figures swing with the other processes, the CPU time much less.

The OpenMP wait policy is set first, as ``leadscore`` sets it before anything loads the runtime: with
spinning idle threads (the default) every parallel region of LightGBM and of the numba kernels stalls
on a busy 2-core machine. So is the memory policy ``leadscore score`` sets
(:func:`training.threads.retain_freed_memory`: freed arrays are reused, not returned and faulted in again).

The last line is one JSON object with these figures.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any


def _small(settings: Any, tmp: Path, leads: int) -> tuple[Path, Path]:
    from leadscore.features.build import build_dataset
    from leadscore.features.schema import feature_schema, schema_hash
    from leadscore.generate import generate_crm
    from leadscore.history import load_history
    from leadscore.training.train import train_from_dataset

    generate_crm(tmp / "crm", n_leads=leads, months=12, seed=1, settings=settings)
    history, _ = load_history(tmp / "crm", settings)
    dataset, _ = build_dataset(history, settings)
    result = train_from_dataset(dataset, feature_schema(settings), settings, history.cutoff,
                                schema_hash=schema_hash(settings), log_to_mlflow=False, out_dir=tmp / "out", trials=2)
    return tmp / "crm", result.bundle.save(tmp / "bundle")


def _best(fns: list[Any], reps: int) -> list[tuple[float, float]]:
    """Per function, the best wall time and the best CPU time (this process, all its threads) of ``reps``
    calls, the functions called in turn (one call of each per round): a machine whose speed drifts
    between runs (a shared host) then times each at the same moments, not one in a fast stretch and the
    other in a slow one."""
    best = [(float("inf"), float("inf")) for _ in fns]
    for _ in range(reps):
        for i, fn in enumerate(fns):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            best[i] = (min(best[i][0], wall), min(best[i][1], cpu))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crm", type=Path)
    ap.add_argument("--bundle", type=Path)
    ap.add_argument("--leads", type=int, default=4000)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()

    from leadscore.training.threads import configure_openmp, retain_freed_memory

    configure_openmp()  # as every leadscore command does first: idle OpenMP threads sleep (training.threads)
    retain_freed_memory()  # as leadscore score does: a chunk's arrays reuse the last one's pages
    import pandas as pd

    from leadscore.config import load_settings
    from leadscore.env import set_offline_env
    from leadscore.features.engine import compute_features, prepare
    from leadscore.history import load_history
    from leadscore.serving.scoring import Scorer
    from leadscore.training.batch_score import CLOSED_STAGES, candidate_leads, score_crm, score_frame

    set_offline_env()
    settings = load_settings(None, [])
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        crm, bundle_dir = (args.crm, args.bundle) if args.crm and args.bundle else _small(settings, tmp, args.leads)
        scorer = Scorer.load(settings, bundle_dir=bundle_dir)
        history, _ = load_history(crm, settings, write_rejected=False)
        as_of = pd.Timestamp(history.cutoff)
        ids, _ = candidate_leads(history, as_of)
        moments = pd.DataFrame({"lead_id": ids, "as_of": pd.Series([as_of] * len(ids), dtype="datetime64[us, UTC]")})
        feats = compute_features(history, moments, settings, prep=prepare(history, settings), coded=True)
        feats = feats[~feats["current_stage"].astype(object).isin(CLOSED_STAGES)].reset_index(drop=True)
        n = len(feats)
        bundle = scorer.bundle
        encoded = {t: bundle.encode(feats, t) for t, m in bundle.models.items() if m.uses_trees}
        boosters = {t: bundle.models[t].booster for t in encoded}

        def raw() -> None:
            for t, x in encoded.items():
                boosters[t].predict(x)

        score_frame(scorer, feats.head(50))  # warm the code tables, the TreeSHAP predictor or the path kernel
        (t_raw, c_raw), (t_predict, c_predict), (t_score, c_score) = _best(
            [raw, lambda: score_frame(scorer, feats, reasons=False), lambda: score_frame(scorer, feats)], args.reps)
        t0 = time.perf_counter()
        summary = score_crm(crm, settings, tmp / "scores.parquet", bundle_dir=bundle_dir)
        t_all = time.perf_counter() - t0
    figures = {
        "rows": n,
        "rows_per_s": round(n / t_score, 1),
        "booster_rows_per_s": round(n / t_raw, 1),
        "ratio": round(t_raw / t_score, 4),
        "no_reasons_rows_per_s": round(n / t_predict, 1),
        "no_reasons_ratio": round(t_raw / t_predict, 4),
        "end_to_end_rows_per_s": round(summary.rows / t_all, 1),
        "cpu_ms": {"booster": round(c_raw * 1e3, 1), "score": round(c_score * 1e3, 1),
                   "no_reasons": round(c_predict * 1e3, 1)},
        "cpu_ratio": round(c_raw / c_score, 4),
        "trees": {t: int(b.num_trees()) for t, b in boosters.items()},
        "attribution": bundle.attribution,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
