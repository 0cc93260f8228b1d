"""Shared by the Dask tests: a 2-worker ``LocalCluster``, the partitioned-CRM writer, the bit-for-bit check."""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from leadscore.features.dask_parts import PART_FILE
from leadscore.tables import TABLES


@pytest.fixture(scope="module", name="client")
def two_worker_client() -> Iterator[object]:
    """A client of a 2-worker ``LocalCluster`` (processes, one thread each, small memory), per test module."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, memory_limit="1.5GiB",
                      dashboard_address=None) as cluster, Client(cluster) as c:
        yield c


def write_partitioned(source: str | Path, dest: Path, parts: int) -> Path:
    """The agreed layout from a one-file-per-table CRM, with pandas only: part k of every table holds the
    accounts whose crc32 falls in bucket k, their leads and those leads' rows (leads without account by
    their own id's crc32)."""
    raw = {name: pd.read_parquet(Path(source) / f"{name}.parquet") for name in TABLES
           if (Path(source) / f"{name}.parquet").exists()}

    def bucket(key: object) -> int:
        return zlib.crc32(str(key).encode()) % parts

    leads = raw["leads"]
    lead_part = {lid: bucket(acc) if isinstance(acc, str) else bucket(lid)
                 for lid, acc in zip(leads["lead_id"], leads["account_id"], strict=True)}
    for name, frame in raw.items():
        keys = frame["account_id"].map(bucket) if name == "accounts" else frame["lead_id"].map(lead_part)
        (dest / name).mkdir(parents=True)
        for k in range(parts):
            frame[(keys == k).to_numpy()].to_parquet(dest / name / PART_FILE.format(k), index=False)
    manifest = json.loads((Path(source) / "manifest.json").read_text())
    manifest["partitioning"] = {"by": "account", "parts": parts}
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


def sorted_rows(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["lead_id", "as_of"], kind="stable", ignore_index=True)


def assert_bit_identical(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Same columns, dtypes and values; floats compared as bit patterns (NaN, -0.0 and all)."""
    assert list(got.columns) == list(want.columns)
    assert len(got) == len(want) > 0
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    for col in want.columns:
        if want[col].dtype == np.float64:
            assert np.array_equal(got[col].to_numpy().view(np.int64), want[col].to_numpy().view(np.int64)), col


