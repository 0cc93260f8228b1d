"""The Dask engine equals the single-machine run, bit for bit, on a 2-worker ``LocalCluster``.

Sources in every form the engine takes: a CRM already partitioned by account (written here by a
plain-pandas helper, independent of the engine's own shuffle), one Parquet file per table, CSV files,
and a SQLite database read in chunks (the last three shuffled into parts by Dask first). Rows are
compared after sorting by ``(lead_id, as_of)``; float columns are compared as their bit patterns.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from leadscore.config import Settings
from leadscore.features.build import build_dataset
from leadscore.features.dask_engine import ParquetSink, build_dataset_dask, build_frame_dask
from leadscore.features.dask_parts import PART_FILE, partition_count, parts_of
from leadscore.features.testing import generated_crm_dir
from leadscore.history import load_history
from leadscore.tables import TABLES
from tests.dask_support import (  # noqa: F401  (two_worker_client: the ``client`` fixture)
    assert_bit_identical,
    sorted_rows,
    two_worker_client,
    write_partitioned,
)

N_LEADS, MONTHS, SEED = 700, 8, 4


@pytest.fixture(scope="module")
def crm(settings: Settings) -> str:
    return generated_crm_dir(settings, N_LEADS, MONTHS, SEED)


@pytest.fixture(scope="module")
def reference(crm: str, settings: Settings) -> pd.DataFrame:
    history, _ = load_history(crm, settings, write_rejected=False)
    return sorted_rows(build_dataset(history, settings)[0])


def test_partitioned_crm_builds_the_single_machine_dataset(client: object, crm: str, settings: Settings,
                                                           reference: pd.DataFrame, tmp_path: Path) -> None:
    parts = write_partitioned(crm, tmp_path / "parts", 3)
    assert partition_count(parts) == 3 and [p.index for p in parts_of(parts)] == [0, 1, 2]
    frames: list[pd.DataFrame] = []
    build = build_dataset_dask(parts, settings, client, frames.append)  # type: ignore[arg-type]
    assert build.parts == 3 and len(frames) == 3  # one frame per part, in part order
    assert_bit_identical(sorted_rows(pd.concat(frames, ignore_index=True)), reference)
    history, _ = load_history(crm, settings, write_rejected=False)
    want = build_dataset(history, settings)[1]
    got = build.summary
    for key in ("leads", "activities", "moments", "features", "censored_sql", "censored_opp", "positive_rate_sql",
                "positive_rate_opp", "rule_mql_rate", "cutoff", "schema_hash"):
        assert getattr(got, key) == getattr(want, key), key
    assert build.report.usable and sum(t.rejected_rows for t in build.report.tables.values()) == 0


def test_single_file_crm_is_shuffled_into_parts_first(client: object, crm: str, settings: Settings,
                                                      reference: pd.DataFrame) -> None:
    frame, build = build_frame_dask(crm, settings, client)  # type: ignore[arg-type]
    assert build.parts == 8  # 4 per worker thread
    assert_bit_identical(frame, reference)


def test_csv_crm_builds_the_same_dataset(client: object, crm: str, settings: Settings, reference: pd.DataFrame,
                                         tmp_path: Path) -> None:
    for name in TABLES:
        pd.read_parquet(Path(crm) / f"{name}.parquet").to_csv(tmp_path / f"{name}.csv", index=False)
    (tmp_path / "manifest.json").write_text((Path(crm) / "manifest.json").read_text())
    single, _ = load_history(tmp_path, settings, write_rejected=False)
    want = sorted_rows(build_dataset(single, settings)[0])
    frame, _ = build_frame_dask(tmp_path, settings, client)  # type: ignore[arg-type]
    assert_bit_identical(frame, want)


def test_sql_database_is_read_in_chunks(client: object, crm: str, settings: Settings, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy import create_engine

    from leadscore.features import dask_parts

    url = f"sqlite:///{tmp_path / 'crm.db'}"
    engine = create_engine(url)
    for name in TABLES:
        pd.read_parquet(Path(crm) / f"{name}.parquet").to_sql(name, engine, index=False)
    engine.dispose()
    monkeypatch.setattr(dask_parts, "SQL_CHUNK_ROWS", 5_000)  # the activities table is ~10 chunks
    cutoff = json.loads((Path(crm) / "manifest.json").read_text())["cutoff"]
    single, _ = load_history(url, settings, cutoff=cutoff, write_rejected=False)
    want = sorted_rows(build_dataset(single, settings)[0])
    frame, _ = build_frame_dask(url, settings, client, cutoff=cutoff)  # type: ignore[arg-type]
    assert_bit_identical(frame, want)


def test_a_part_without_leads_and_invalid_rows_are_handled_like_the_whole(client: object, crm: str,
                                                                          settings: Settings, tmp_path: Path) -> None:
    """Rows the loader rejects are rejected in their part too (a lead of an unknown account, and so its
    activities), and a part holding no lead at all neither fails nor makes the CRM unusable."""
    source = tmp_path / "crm"
    source.mkdir()
    with_opportunity = set(pd.read_parquet(Path(crm) / "opportunities.parquet")["lead_id"])
    for name in TABLES:
        frame = pd.read_parquet(Path(crm) / f"{name}.parquet")
        if name == "leads":  # a lead without opportunity (an opportunity's account is its lead's)
            row = next(i for i, lead in zip(frame.index, frame["lead_id"], strict=True) if lead not in with_opportunity)
            frame.loc[row, "account_id"] = "no-such-account"
        frame.to_parquet(source / f"{name}.parquet", index=False)
    (source / "manifest.json").write_text((Path(crm) / "manifest.json").read_text())
    history, report = load_history(source, settings, write_rejected=False)
    want = sorted_rows(build_dataset(history, settings)[0])
    parts = write_partitioned(source, tmp_path / "parts", 4)
    for name in TABLES:  # part 3 emptied: its rows moved to part 0
        a, b = parts / name / PART_FILE.format(0), parts / name / PART_FILE.format(3)
        pd.concat([pd.read_parquet(a), pd.read_parquet(b)], ignore_index=True).to_parquet(a, index=False)
        pd.read_parquet(b).iloc[:0].to_parquet(b, index=False)
    sink = ParquetSink(tmp_path / "out.parquet")
    build = build_dataset_dask(parts, settings, client, sink)  # type: ignore[arg-type]
    sink.close()
    assert_bit_identical(sorted_rows(pd.read_parquet(tmp_path / "out.parquet")), want)
    assert build.report.usable
    for name in TABLES:
        assert build.report.tables[name].rejected_rows == report.tables[name].rejected_rows, name
        assert build.report.tables[name].reasons == report.tables[name].reasons, name
    assert report.tables["leads"].reasons == {"unknown account_id": 1}
    assert report.tables["activities"].reasons.get("unknown lead_id", 0) > 0
