"""Account-aligned partitions of a CRM history: the layout, the per-part loader, and the Dask shuffle into it.

Every feature of a lead reads that lead's rows and its account's rows (the account's other leads,
their activities and opportunities), nothing else; moments are sampled with a per-lead seed and
labels are per lead. So a CRM split *by account* — part ``k`` of every table holds one block of
accounts, their leads and those leads' rows, leads without an account placed by a hash of their
id — can be built part by part with the very kernel of the single-machine run, and the union of the
parts' rows is the single-machine dataset. The layout (agreed with the generator)::

    <dir>/manifest.json               {"cutoff": ..., "partitioning": {"by": "account", "parts": N}}
    <dir>/<table>/part-00000.parquet  ... part-<N-1>, for each of the five CRM tables

A source in any other form (one Parquet or CSV file per table, or a SQL database) is first shuffled
into that layout with Dask (:func:`repartition`): each input chunk is split by bucket and written as
fragments, then each bucket's fragments are concatenated in input order, so a part's rows keep the
order they had in the source (which copy of a duplicated key survives validation depends on it).

What the split assumes: keys are unique across parts (the validation's duplicate checks run per part)
and an opportunity's account is its lead's account or empty; both hold for CRM exports and for the
generator. Opportunities and child rows follow their lead.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from leadscore.history import (
    MANIFEST,
    TableReport,
    ValidationReport,
    is_database_url,
    load_history,
    read_manifest,
    text_dtype,
)
from leadscore.tables import ESSENTIAL_TABLES, TABLES

if TYPE_CHECKING:
    from distributed import Client

    from leadscore.config import Settings
    from leadscore.history import CRMHistory

#: file name of part ``k`` of a table
PART_FILE = "part-{:05d}.parquet"
#: rows per chunk when a SQL table is read (one Dask task per chunk)
SQL_CHUNK_ROWS = 500_000


@dataclass(frozen=True)
class Part:
    """Part ``index`` of a partitioned CRM: per table, its file (absent tables are left out)."""

    index: int
    files: dict[str, str]


def partition_count(directory: Path | str) -> int | None:
    """N when ``directory`` is a CRM partitioned by account (its manifest says so), else None."""
    if is_database_url(directory) or not Path(directory).is_dir():
        return None
    spec = read_manifest(Path(directory)).get("partitioning")
    if isinstance(spec, dict) and spec.get("by") == "account" and int(spec.get("parts", 0)) > 0:
        return int(spec["parts"])
    return None


def parts_of(directory: Path | str) -> list[Part]:
    """The parts of a partitioned CRM, in order (:func:`partition_count` must be set)."""
    root = Path(directory)
    n = partition_count(root)
    if n is None:
        raise ValueError(f"{root} is not a CRM partitioned by account (no partitioning in its {MANIFEST})")
    parts = []
    for k in range(n):
        files = {name: str(root / name / PART_FILE.format(k)) for name in TABLES}
        parts.append(Part(k, {name: f for name, f in files.items() if os.path.exists(f)}))
    return parts


def load_part(part: Part, settings: Settings, cutoff: pd.Timestamp) -> tuple[CRMHistory, ValidationReport]:
    """One part as a validated history, through the single-machine loader (same parsing, same checks).

    The loader reads ``<dir>/<table>.parquet``; a private directory of links to the part's files gives
    it exactly that. The cut-off is the whole CRM's, resolved once on the client. Rejected rows are
    counted in the report, not written (parts run concurrently; ``leadscore validate`` writes them).
    """
    with tempfile.TemporaryDirectory(prefix=f"leadscore-part{part.index}-") as tmp:
        for name, path in part.files.items():
            os.symlink(os.path.abspath(path), os.path.join(tmp, f"{name}.parquet"))
        return load_history(tmp, settings, cutoff=cutoff, write_rejected=False)


def merge_reports(reports: Iterable[ValidationReport], cutoff: pd.Timestamp) -> ValidationReport:
    """The whole CRM's report from its parts': counts and reasons add up; a table is unusable when a
    required column is missing or no row of any part survives (one empty part is no problem)."""
    merged = {name: TableReport(name=name) for name in TABLES}
    missing: dict[str, str] = {}
    for report in reports:
        for name, t in report.tables.items():
            m = merged[name]
            m.input_rows += t.input_rows
            m.valid_rows += t.valid_rows
            m.rejected_rows += t.rejected_rows
            for reason, count in t.reasons.items():
                m.reasons[reason] = m.reasons.get(reason, 0) + count
            for reason, examples in t.examples.items():
                m.examples.setdefault(reason, []).extend(examples[: 3 - len(m.examples.get(reason, []))])
            m.notes.extend(n for n in t.notes if n not in m.notes)
            if t.unusable is not None and t.unusable.startswith("required column"):
                missing[name] = t.unusable
    for name, m in merged.items():
        if name in missing:
            m.unusable = missing[name]
        elif m.valid_rows == 0 and (m.input_rows > 0 or name in ESSENTIAL_TABLES):
            m.unusable = "no valid row"
    return ValidationReport(tables=merged, cutoff=cutoff)


# --------------------------------------------------------------------------------------------------
# the shuffle into the layout
# --------------------------------------------------------------------------------------------------


def _ids(values: pd.Series) -> np.ndarray:
    """Ids as the loader canonicalises them (text, stripped, blank = missing, 12.0 = "12"), as objects."""
    s = values
    if pd.api.types.is_float_dtype(s.dtype) and (s.dropna() % 1 == 0).all():
        s = s.astype("Int64")
    text = s.astype(text_dtype()).str.strip()
    return text.where(s.notna() & (text.str.len() > 0)).to_numpy(dtype=object, na_value=None)


def _hash_bucket(ids: np.ndarray, parts: int) -> np.ndarray:
    """A stable bucket per id (pandas' SipHash with its fixed key: the same on every machine and run)."""
    filled = np.where(pd.isna(ids), "", ids).astype(object)
    return (pd.util.hash_array(filled) % np.uint64(parts)).astype(np.int64)


def lead_buckets(leads: pd.DataFrame, parts: int) -> np.ndarray:
    """Per lead row, its part: its account's bucket, or its own id's when it has no account."""
    acc = _ids(leads["account_id"]) if "account_id" in leads.columns else np.full(len(leads), None, dtype=object)
    own = _hash_bucket(_ids(leads["lead_id"]), parts)
    return np.where(pd.isna(acc), own, _hash_bucket(acc, parts))


def row_buckets(frame: pd.DataFrame, table: str, parts: int, lead_part: pd.Series) -> np.ndarray:
    """Per row of ``table``, its part: accounts by id, leads by :func:`lead_buckets`, the other tables
    by their lead's part (a row of an unknown lead by its lead id: validation rejects it there)."""
    if table == "accounts":
        return _hash_bucket(_ids(frame["account_id"]), parts)
    if table == "leads":
        return lead_buckets(frame, parts)
    ids = _ids(frame["lead_id"])
    found = lead_part.reindex(ids).to_numpy()
    out = np.nan_to_num(found).astype(np.int64)
    unknown = np.isnan(found)
    if unknown.any():
        out[unknown] = _hash_bucket(ids[unknown], parts)
    return out


def _source_chunks(source: str, table: str) -> tuple[list[Any], pd.DataFrame] | None:
    """Delayed pandas chunks of one table of a file directory or database, and an empty frame of its columns."""
    import dask
    import dask.dataframe as dd

    if is_database_url(source):
        return _sql_chunks(source, table)
    parquet, csv = Path(source) / f"{table}.parquet", Path(source) / f"{table}.csv"
    if parquet.exists():
        frame = dd.read_parquet(str(parquet))
    elif csv.exists():  # everything as text, as the single-machine reader does
        frame = dd.read_csv(str(csv), dtype=str, keep_default_na=False, na_values=[""])
    else:
        return None
    meta = frame._meta
    return list(frame.to_delayed()) if frame.npartitions else [dask.delayed(meta)], meta


def _sql_chunks(url: str, table: str) -> tuple[list[Any], pd.DataFrame] | None:
    """A SQL table read in chunks of :data:`SQL_CHUNK_ROWS` ordered by its key (one task per chunk)."""
    import dask
    from sqlalchemy import create_engine, func, inspect, select

    engine = create_engine(url)
    try:
        if not inspect(engine).has_table(table):
            return None
        reflected = _reflect(engine, table)
        with engine.connect() as conn:
            rows = int(conn.execute(select(func.count()).select_from(reflected)).scalar_one())
    finally:
        engine.dispose()
    meta = pd.DataFrame({c.name: pd.Series(dtype=object) for c in reflected.columns})
    starts = range(0, max(rows, 1), SQL_CHUNK_ROWS)
    return [dask.delayed(_sql_chunk)(url, table, start, SQL_CHUNK_ROWS) for start in starts], meta


def _reflect(engine: Any, table: str) -> Any:
    from sqlalchemy import MetaData, Table

    return Table(table, MetaData(), autoload_with=engine)


def _sql_chunk(url: str, table: str, start: int, rows: int) -> pd.DataFrame:
    """Rows ``start..start+rows`` of ``table`` in key order, typed by the table's reflected column types
    as ``pandas.read_sql_table`` types them (SQLite keeps times as text and booleans as 0/1: SQLAlchemy's
    result processing turns them back); JSON columns (dicts/lists from PostgreSQL) become JSON text."""
    from sqlalchemy import DateTime, create_engine, select

    engine = create_engine(url)
    try:
        reflected = _reflect(engine, table)
        key = [reflected.c[c] for c in TABLES[table].key if c in reflected.c]
        query = select(reflected).order_by(*key).limit(rows).offset(start)
        with engine.connect() as conn:
            frame = pd.read_sql(query, conn)
    finally:
        engine.dispose()
    for col in reflected.columns:
        if isinstance(col.type, DateTime):
            frame[col.name] = pd.to_datetime(frame[col.name], utc=bool(getattr(col.type, "timezone", False)))
    for name in frame.select_dtypes(include="object").columns:
        if frame[name].map(lambda v: isinstance(v, dict | list)).any():
            frame[name] = frame[name].map(lambda v: json.dumps(v) if isinstance(v, dict | list) else v)
    return frame


def _write_fragments(frame: pd.DataFrame, table: str, parts: int, lead_part: pd.Series, scratch: str,
                     chunk: int) -> int:
    """Split one input chunk by part into ``<scratch>/<table>/<part>/<chunk>.parquet``; rows written."""
    buckets = row_buckets(frame, table, parts, lead_part)
    for k, rows in sorted(pd.Series(buckets).groupby(buckets).indices.items()):
        target = Path(scratch) / table / str(k)
        target.mkdir(parents=True, exist_ok=True)
        frame.iloc[rows].to_parquet(target / f"{chunk:06d}.parquet", index=False)
    return len(frame)


def _gather_part(scratch: str, table: str, k: int, meta: pd.DataFrame, out: str) -> int:
    """Part ``k`` of ``table``: its fragments concatenated in input-chunk order (an empty part keeps the columns)."""
    folder = Path(scratch) / table / str(k)
    pieces = [pd.read_parquet(f) for f in sorted(folder.glob("*.parquet"))] if folder.exists() else []
    frame = pd.concat(pieces, ignore_index=True) if pieces else meta.iloc[:0]
    frame.to_parquet(out, index=False)
    return len(frame)


def repartition(source: Path | str, dest: Path | str, parts: int, client: Client,
                cutoff: pd.Timestamp | None = None, on_step: Callable[[str], None] | None = None) -> Path:
    """Shuffle a CRM (file directory or database URL) into the account-aligned layout at ``dest``, with Dask.

    Leads are read first and their parts (a small ``lead_id → part`` table, ~50 bytes a lead) sent to
    every worker once, so the big tables are split chunk by chunk without a join. ``cutoff`` goes into
    the manifest (default: the source's own manifest, for directories).
    """
    import dask

    source, out = str(source), Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="_shuffle-", dir=out)
    say = on_step or (lambda _s: None)
    say("reading lead ids")
    leads = _source_chunks(source, "leads")
    if leads is None:
        raise ValueError(f"{source}: no leads table")

    def lead_parts(frame: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"lead_id": _ids(frame["lead_id"]), "part": lead_buckets(frame, parts)})

    mapping = pd.concat(dask.compute(*[dask.delayed(lead_parts)(c) for c in leads[0]]), ignore_index=True)
    mapping = mapping[mapping["lead_id"].notna()].drop_duplicates("lead_id")  # the first copy wins, as in validation
    lead_part = pd.Series(mapping["part"].to_numpy(dtype=np.float64), index=pd.Index(mapping["lead_id"], dtype=object))
    del mapping
    [shared] = client.scatter([lead_part], broadcast=True)
    metas: dict[str, pd.DataFrame] = {}
    writes = []
    for table in TABLES:
        say(f"splitting {table}")
        found = leads if table == "leads" else _source_chunks(source, table)
        if found is None:
            continue
        chunks, metas[table] = found
        writes += [dask.delayed(_write_fragments)(c, table, parts, shared, scratch, i) for i, c in enumerate(chunks)]
    client.compute(writes, sync=True)
    say("writing the parts")
    gathers = []
    for table, meta in metas.items():
        (out / table).mkdir(exist_ok=True)
        gathers += [client.submit(_gather_part, scratch, table, k, meta, str(out / table / PART_FILE.format(k)),
                                  pure=False) for k in range(parts)]
    client.gather(gathers)
    import shutil

    shutil.rmtree(scratch, ignore_errors=True)
    manifest: dict[str, Any] = {} if is_database_url(source) else read_manifest(Path(source))
    if cutoff is not None:
        manifest["cutoff"] = pd.Timestamp(cutoff).isoformat()
    manifest["partitioning"] = {"by": "account", "parts": parts}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
    return out
