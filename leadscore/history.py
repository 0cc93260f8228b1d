"""Read and validate CRM history: five tables from a directory of Parquet or CSV files, or a SQL database.

A directory holds ``<table>.parquet`` (or ``.csv``) per table, or the generator's partitioned layout
(``<table>/part-00000.parquet ...``), read here in part order into one frame.

A source is a directory or a SQLAlchemy URL (``postgresql+psycopg://.../crm``, ``sqlite:///crm.db``)
whose tables carry the five names: a CRM replica can be scored without exporting it first.

Validation is declared as pandera schemas and run lazily, so every failing row is collected with
the check it failed. Rows that fail are written aside to ``<dir>/_rejected/<table>.parquet`` with a
``reason`` column and reported; valid + rejected always equals the input. A table is *unusable*
(the command exits non-zero) only when a required column is missing or no row survives.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from leadscore.config import Settings
from leadscore.errors import DataError
from leadscore.tables import ESSENTIAL_TABLES, STAGES, TABLES, Column, TableSpec, mark_distinct, text_dtype

REJECTED_DIR = "_rejected"
MANIFEST = "manifest.json"
TS_DTYPE = "datetime64[us, UTC]"
_RAW = "__raw__"
_TRUE = {"true", "1", "yes", "y", "t", "won"}
_FALSE = {"false", "0", "no", "n", "f", "lost"}


@dataclass
class CRMHistory:
    """The validated CRM tables, with the moment the data was cut off (nothing after it exists)."""

    accounts: pd.DataFrame
    leads: pd.DataFrame
    activities: pd.DataFrame
    stage_changes: pd.DataFrame
    opportunities: pd.DataFrame
    cutoff: pd.Timestamp

    def table(self, name: str) -> pd.DataFrame:
        frame: pd.DataFrame = getattr(self, name)
        return frame


@dataclass
class TableReport:
    name: str
    input_rows: int = 0
    valid_rows: int = 0
    rejected_rows: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    unusable: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "input_rows": self.input_rows,
            "valid_rows": self.valid_rows,
            "rejected_rows": self.rejected_rows,
            "reasons": self.reasons,
            "examples": self.examples,
            "notes": self.notes,
            "unusable": self.unusable,
        }


@dataclass
class ValidationReport:
    tables: dict[str, TableReport]
    cutoff: pd.Timestamp

    @property
    def usable(self) -> bool:
        return all(t.unusable is None for t in self.tables.values())

    def to_dict(self) -> dict[str, object]:
        return {"cutoff": self.cutoff.isoformat(), "tables": {k: v.to_dict() for k, v in self.tables.items()}}


class HistoryError(DataError):
    """The history cannot be used at all; the message says which table and why."""


def empty_table(spec: TableSpec) -> pd.DataFrame:
    """A zero-row frame with the canonical columns and dtypes of ``spec``."""
    return _canonical(pd.DataFrame({c: pd.Series([], dtype=text_dtype()) for c in spec.columns}), spec)


def read_parquet_table(directory: Path, name: str) -> pd.DataFrame | None:
    """``<name>.parquet``, or the partitioned layout's ``<name>/part-*.parquet`` concatenated in part order
    (:mod:`leadscore.generate`); ``None`` when neither exists."""
    parts = sorted((directory / name).glob("part-*.parquet")) if (directory / name).is_dir() else []
    if parts:
        import pyarrow as pa
        import pyarrow.parquet as pq

        return pa.concat_tables([pq.read_table(p) for p in parts]).to_pandas()
    path = directory / f"{name}.parquet"
    return pd.read_parquet(path) if path.exists() else None


def _read_raw(directory: Path, name: str) -> pd.DataFrame | None:
    parquet = read_parquet_table(directory, name)
    if parquet is not None:
        return parquet
    csv = directory / f"{name}.csv"
    if csv.exists():
        # Everything as text: a bad cell must become a rejected row, not a failed read.
        return pd.read_csv(csv, dtype=str, keep_default_na=False, na_values=[""])
    return None


def is_database_url(source: object) -> bool:
    """A history source is a database when it is given as a URL (``scheme://...``), else a directory."""
    return isinstance(source, str) and "://" in source


def _read_sql(engine: object, name: str) -> pd.DataFrame | None:
    """One table from a database; JSON columns (dicts/lists from PostgreSQL) become JSON text like a file's."""
    from sqlalchemy import inspect

    if not inspect(engine).has_table(name):
        return None
    df = pd.read_sql_table(name, engine)  # type: ignore[arg-type]
    for col in df.select_dtypes(include="object").columns:
        if df[col].map(lambda v: isinstance(v, dict | list)).any():
            df[col] = df[col].map(lambda v: json.dumps(v) if isinstance(v, dict | list) else v)
    return df


def _blank_to_na(s: pd.Series) -> pd.Series:
    if s.dtype == object or pd.api.types.is_string_dtype(s.dtype):
        s = s.astype(text_dtype())
        return s.where(s.str.strip().str.len() > 0)
    return s


def _parse_ts(s: pd.Series) -> pd.Series:
    if isinstance(s.dtype, pd.DatetimeTZDtype):
        return s.dt.tz_convert("UTC").dt.as_unit("us")
    if pd.api.types.is_datetime64_dtype(s.dtype):
        return s.dt.tz_localize("UTC").dt.as_unit("us")
    parsed = pd.to_datetime(s, utc=True, errors="coerce", format="mixed")
    return parsed.dt.as_unit("us")


def _parse_bool(s: pd.Series) -> pd.Series:
    if pd.api.types.is_bool_dtype(s.dtype):
        return s.astype("boolean")
    text = s.astype(text_dtype()).str.strip().str.lower()
    out = pd.Series(pd.NA, index=s.index, dtype="boolean")
    out[text.isin(_TRUE)] = True
    out[text.isin(_FALSE)] = False
    out[s.isna()] = pd.NA
    return out


def _canonical(df: pd.DataFrame, spec: TableSpec) -> pd.DataFrame:
    """Parse every column to its kind; unparseable cells become missing (the raw value is kept)."""
    out = pd.DataFrame(index=df.index)
    for col, kind in spec.columns.items():
        raw = _blank_to_na(df[col]) if col in df.columns else pd.Series(np.nan, index=df.index, dtype=text_dtype())
        if kind in ("id", "str", "json"):
            if kind == "id" and pd.api.types.is_float_dtype(raw.dtype):
                # Ids read from Parquet may be floats; "12.0" must not differ from "12".
                raw = raw.astype("Int64") if (raw.dropna() % 1 == 0).all() else raw
            out[col] = raw.astype(text_dtype())
        elif kind == "ts":
            out[col] = _parse_ts(raw)
        elif kind in ("float", "int"):
            num = pd.to_numeric(raw, errors="coerce")
            out[col] = num.astype("float64") if kind == "float" else num.astype("Float64").round().astype("Int64")
        elif kind == "bool":
            out[col] = _parse_bool(raw)
        if kind in ("ts", "float", "int", "bool"):
            out[_RAW + col] = raw.notna()
    return out


def _not_parsed(col: str) -> pa.Check:
    kind_word = "timestamp" if col.endswith("_at") else "value"
    return pa.Check(
        lambda df: df[col].notna() | ~df[_RAW + col],
        error=f"unparseable {kind_word} in {col}",
    )


def _column_checks(
    column: Column, settings: Settings, cutoff: pd.Timestamp, refs: dict[str, set[str]]
) -> list[pa.Check]:
    """The checks the spec declares for one column (the API's request models derive the same ones)."""
    col = column.name
    checks: list[pa.Check] = []
    if column.kind == "ts":
        checks.append(pa.Check.le(cutoff, error=f"{col} after the data cut-off {cutoff.isoformat()}"))
    if column.ge is not None:
        checks.append(pa.Check.ge(column.ge, error=f"negative {col}" if column.ge == 0 else f"{col} below {column.ge}"))
    if column.max_length is not None:
        checks.append(pa.Check.str_length(max_value=column.max_length,
                                           error=f"{col} longer than {column.max_length} characters"))
    if column.pattern is not None:
        pattern = column.pattern  # fullmatch: a trailing newline must not pass as the end of the text
        checks.append(pa.Check(lambda s: s.str.fullmatch(pattern), ignore_na=True,
                               error=f"control characters in {col}"))
    if column.kind == "json":
        checks.append(
            pa.Check(lambda s: s.str.startswith("{") & s.str.endswith("}"), element_wise=False,
                     error=f"{col} is not a JSON object", ignore_na=True)
        )
    if column.references is not None:
        checks.append(pa.Check.isin(refs.get(col, set()), error=f"unknown {col}"))
    if column.choices is not None:
        allowed = settings.stages.all if column.choices == STAGES else list(column.choices)
        checks.append(pa.Check.isin(allowed, error=f"unknown {col}"))
    return checks


def _schema(spec: TableSpec, settings: Settings, cutoff: pd.Timestamp, refs: dict[str, set[str]]) -> pa.DataFrameSchema:
    """The pandera schema of one table, from its spec, with the cross-table references known so far."""
    cols = {
        c.name: pa.Column(
            nullable=c.nullable,
            checks=_column_checks(c, settings, cutoff, refs),
            unique=spec.key == (c.name,),
            report_duplicates="exclude_first",
            required=True,
        )
        for c in spec.fields
        if not c.store_only
    }
    frame_checks = [_not_parsed(c) for c, k in spec.columns.items() if k in ("ts", "float", "int", "bool")]
    for earlier, later in spec.ordered:
        frame_checks.append(
            pa.Check(lambda df, a=earlier, b=later: df[b].isna() | (df[b] >= df[a]), error=f"{later} before {earlier}")
        )
    return pa.DataFrameSchema(
        cols,
        checks=frame_checks,
        unique=list(spec.key) if len(spec.key) > 1 else None,
        report_duplicates="exclude_first",
    )


def _reason_for(check: str, column: object) -> str:
    col = "" if column is None or (isinstance(column, float) and np.isnan(column)) else str(column)
    if check == "not_nullable":
        return f"empty required field {col}"
    if check == "field_uniqueness":
        return f"duplicate {col}"
    if check == "multiple_fields_uniqueness":
        return "duplicate key"
    return check


def _validate_table(
    raw: pd.DataFrame, spec: TableSpec, settings: Settings, cutoff: pd.Timestamp, refs: dict[str, set[str]]
) -> tuple[pd.DataFrame, pd.DataFrame, TableReport]:
    report = TableReport(name=spec.name, input_rows=len(raw))
    raw = raw.reset_index(drop=True)
    missing = [c for c in spec.required if c not in raw.columns]
    if missing:
        report.unusable = f"required column(s) missing: {', '.join(missing)}"
        report.rejected_rows = len(raw)
        report.reasons = {report.unusable: len(raw)} if len(raw) else {}
        rejected = raw.astype(text_dtype()).assign(reason=report.unusable)
        return empty_table(spec), rejected, report
    absent = [c for c in spec.columns if c not in raw.columns]
    if absent:
        report.notes.append(f"optional column(s) absent, left empty: {', '.join(absent)}")
    extra = [c for c in raw.columns if c not in spec.columns]
    if extra:
        report.notes.append(f"column(s) not in the contract, ignored: {', '.join(map(str, extra))}")
    defaults = {c.name: c.default for c in spec.fields if c.name in absent and c.default is not None}
    if defaults:
        raw = raw.assign(**defaults)
    df = _canonical(raw, spec)
    if spec.name == "activities":
        known = set(settings.activity_names) | set(settings.sales_activity_names)
        typ = df["type"].str.strip().str.lower()
        unknown = typ.notna() & ~typ.isin(known)
        if unknown.any():
            counts = typ[unknown].value_counts().head(5).to_dict()
            report.notes.append(f"{int(unknown.sum())} activities of unknown type stored as 'other' (top: {counts})")
        df["type"] = typ.where(~unknown, "other")
        df.loc[typ.isin(settings.sales_activity_names), "actor"] = "sales"  # a sales touch is sales-side
    for c in spec.fields:
        if c.choices is not None and c.name in df.columns:  # vocabularies are matched case-insensitively
            df[c.name] = df[c.name].str.strip().str.lower()
    schema = _schema(spec, settings, cutoff, refs)
    bad: dict[int, list[str]] = {}
    try:
        schema.validate(df, lazy=True)
    except SchemaErrors as exc:
        fc = exc.failure_cases
        row_level = fc[fc["index"].notna()]
        for idx, check, column in zip(row_level["index"], row_level["check"], row_level["column"], strict=True):
            reason = _reason_for(str(check), column)
            lst = bad.setdefault(int(idx), [])
            if reason not in lst:
                lst.append(reason)
    mask = np.zeros(len(df), dtype=bool)
    if bad:
        mask[list(bad)] = True
    valid = df.loc[~mask, list(spec.columns)].reset_index(drop=True)
    if len(spec.key) == 1:  # validation rejected every repeat of the key: what remains is distinct
        mark_distinct(valid[spec.key[0]].array)
    rejected = raw.loc[mask].copy()
    if bad:
        rejected = rejected.astype(text_dtype())
        rejected["reason"] = ["; ".join(bad[i]) for i in rejected.index]
        for i in sorted(bad):
            for reason in bad[i]:
                report.reasons[reason] = report.reasons.get(reason, 0) + 1
                examples = report.examples.setdefault(reason, [])
                if len(examples) < 3:
                    key = ", ".join(f"{k}={raw.at[i, k]}" for k in spec.key if k in raw.columns)
                    examples.append(f"row {i}: {key}")
    report.valid_rows, report.rejected_rows = len(valid), int(mask.sum())
    if report.valid_rows == 0 and (report.input_rows > 0 or spec.name in ESSENTIAL_TABLES):
        report.unusable = "no valid row"
    return valid, rejected, report


def read_manifest(directory: Path) -> dict[str, object]:
    path = directory / MANIFEST
    if path.exists():
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    return {}


def resolve_cutoff(directory: Path | None, cutoff: str | datetime | pd.Timestamp | None) -> pd.Timestamp:
    """Explicit cut-off, else the one in ``manifest.json`` (directories), else now (UTC)."""
    if cutoff is None and directory is not None:
        cutoff = read_manifest(directory).get("cutoff")  # type: ignore[assignment]
    if cutoff is None:
        return pd.Timestamp(datetime.now(UTC)).as_unit("us")
    ts = pd.Timestamp(cutoff)
    return (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).as_unit("us")


def load_history(
    directory: Path | str,
    settings: Settings,
    cutoff: str | datetime | pd.Timestamp | None = None,
    write_rejected: bool = True,
) -> tuple[CRMHistory, ValidationReport]:
    """Load and validate the five tables; write rejected rows aside; never drop a row silently.

    ``directory`` is a directory of files or a database URL (:func:`is_database_url`). A database
    has no manifest, so its cut-off is the explicit one or now, and its rejected rows go to
    ``<paths.reports_dir>/_rejected/`` (nothing is written into the CRM's database).
    Parents are validated before children so that a child pointing at a rejected parent is rejected
    too, with reason ``unknown lead_id`` / ``unknown account_id``.
    """
    engine = None
    if is_database_url(directory):
        from sqlalchemy import create_engine
        from sqlalchemy.exc import SQLAlchemyError

        url = str(directory)
        try:
            engine = create_engine(url)
            engine.connect().close()
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise HistoryError(f"cannot open the CRM database {url}: {exc}") from exc
        read = lambda name: _read_sql(engine, name)  # noqa: E731
        missing = "no {name} table in " + url
        absent = "no {name} table: treated as empty"
        cut = resolve_cutoff(None, cutoff)
        rejected_dir = Path(settings.paths.reports_dir) / REJECTED_DIR
    else:
        directory = Path(directory)
        if not directory.is_dir():
            raise HistoryError(f"{directory} is not a directory")
        read = lambda name: _read_raw(directory, name)  # noqa: E731
        missing = "no {name}.parquet or {name}.csv in " + str(directory)
        absent = "no {name} file: treated as empty"
        cut = resolve_cutoff(directory, cutoff)
        rejected_dir = directory / REJECTED_DIR
    refs: dict[str, set[str]] = {}
    valid_tables: dict[str, pd.DataFrame] = {}
    reports: dict[str, TableReport] = {}
    for name, spec in TABLES.items():
        raw = read(name)
        if raw is None:
            report = TableReport(name=name)
            if name in ESSENTIAL_TABLES:
                report.unusable = missing.format(name=name)
            else:
                report.notes.append(absent.format(name=name))
            valid_tables[name], reports[name] = empty_table(spec), report
        else:
            valid, rejected, report = _validate_table(raw, spec, settings, cut, refs)
            valid_tables[name], reports[name] = valid, report
            target = rejected_dir / f"{name}.parquet"
            if write_rejected and len(rejected):
                rejected_dir.mkdir(parents=True, exist_ok=True)
                rejected.to_parquet(target, index=False)
            elif write_rejected and target.exists():
                target.unlink()
        if name == "accounts":
            refs["account_id"] = set(valid_tables[name]["account_id"].dropna())
        if name == "leads":
            refs["lead_id"] = set(valid_tables[name]["lead_id"].dropna())
    if engine is not None:
        engine.dispose()  # the tables are in memory now; hold no connection to the CRM's database
    history = CRMHistory(cutoff=cut, **valid_tables)
    return history, ValidationReport(tables=reports, cutoff=cut)


def save_history(history: CRMHistory, directory: Path | str, extra_manifest: dict[str, object] | None = None) -> None:
    """Write the five tables as Parquet plus a manifest with the cut-off (what importers produce)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name in TABLES:
        history.table(name).to_parquet(directory / f"{name}.parquet", index=False)
    manifest = {"cutoff": history.cutoff.isoformat(), **(extra_manifest or {})}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
