"""Benchmark the HubSpot importer and the flat-table leakage guard: rows per second and peak memory.

Usage: python benchmarks/importers.py [--contacts 200000] [--out /tmp/leadscore-bench-import]

A HubSpot-shaped contacts export (lifecycle dates, conversion dates, counters, company fields, a few
bad dates) is written first, then imported (mapping + validation by ``load_history`` + ``_rejected``).
Then the leakage guard and feature preparation of the flat path run on the same number of rows.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np
import pandas as pd

from leadscore.config import load_settings
from leadscore.importers.hubspot import import_hubspot
from leadscore.training.flat import FlatMapping, check_leakage, prepare_flat


def _contacts(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    created = pd.Timestamp("2025-01-01") + pd.to_timedelta(rng.integers(0, 300 * 24 * 60, n), unit="min")
    def later(p: float, days: int) -> pd.Series:
        ts = created + pd.to_timedelta(rng.integers(0, days * 24 * 60, n), unit="min")
        return pd.Series(np.where(rng.random(n) < p, ts.strftime("%Y-%m-%d %H:%M"), ""))
    fmt = created.strftime("%Y-%m-%d %H:%M")
    bad = rng.random(n) < 0.001
    return pd.DataFrame({
        "Record ID": np.arange(1, n + 1),
        "Email": [f"p{i}@c{i % 5000}.com" for i in range(n)],
        "Create Date": np.where(bad, "not a date", fmt),
        "Lifecycle Stage": rng.choice(["lead", "marketingqualifiedlead", "salesqualifiedlead"], n),
        "Became a Lead Date": fmt,
        "Became a Marketing Qualified Lead Date": later(0.25, 60),
        "Became a Sales Qualified Lead Date": later(0.06, 90),
        "Job Title": rng.choice(["CEO", "VP Sales", "Engineer", "Analyst", ""], n),
        "Company Name": [f"Company {i % 5000}" for i in range(n)],
        "Company Domain Name": [f"c{i % 5000}.com" for i in range(n)],
        "Industry": rng.choice(["software", "retail", "healthcare"], n),
        "Number of Employees": rng.integers(1, 5000, n),
        "Number of Pageviews": rng.poisson(8, n),
        "Number of Form Submissions": rng.poisson(1, n),
        "First Conversion Date": fmt,
        "Recent Conversion Date": later(0.5, 30),
        "Time Last Seen": later(0.8, 30),
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contacts", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("/tmp/leadscore-bench-import"))
    args = parser.parse_args()
    settings = load_settings()
    args.out.mkdir(parents=True, exist_ok=True)
    frame = _contacts(args.contacts, args.seed)
    src = args.out / "contacts.csv"
    frame.to_csv(src, index=False)

    start = time.perf_counter()
    report = import_hubspot(src, args.out / "crm", settings)
    seconds = time.perf_counter() - start
    import_s = seconds
    rows = {n: t.input_rows for n, t in report.validation.tables.items()}
    rejected = sum(t.rejected_rows for t in report.validation.tables.values())
    print(f"hubspot import: contacts={args.contacts:,} table_rows={rows} rejected={rejected:,}")
    print(f"  wall_seconds={seconds:.1f} contacts_per_second={args.contacts / seconds:,.0f}")

    flat = frame.assign(converted=np.where(frame["Became a Sales Qualified Lead Date"] != "", "1", "0"))
    mapping = FlatMapping.model_validate({
        "name": "bench", "id": "Record ID", "label": "converted", "positive": ["1"],
        "columns": {"Industry": {"type": "categorical"}, "Job Title": {"type": "categorical"},
                    "Number of Employees": {"type": "numeric"},
                    "Number of Pageviews": {"type": "numeric", "role": "interest"},
                    "Number of Form Submissions": {"type": "numeric", "role": "interest"}},
    })
    start = time.perf_counter()
    data = prepare_flat(flat.astype(str), mapping)
    check_leakage(data, mapping)
    seconds = time.perf_counter() - start
    print(f"flat prepare + leakage guard: rows={len(flat):,} columns={len(data.schema)} "
          f"wall_seconds={seconds:.1f} rows_per_second={len(flat) / seconds:,.0f}")
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(f"peak_rss_gb={peak_gb:.2f}")
    print(json.dumps({"hubspot_import_s": round(import_s, 2), "hubspot_contacts_per_s": round(args.contacts / import_s),
                      "flat_prepare_s": round(seconds, 2), "flat_rows_per_s": round(len(flat) / seconds),
                      "peak_rss_gb": round(peak_gb, 2)}))


if __name__ == "__main__":
    main()
