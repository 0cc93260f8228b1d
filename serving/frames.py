"""Stored rows ↔ canonical CRM frames (the dtypes of :mod:`leadscore.history`).

Used by the bulk import (frames → rows) and by ``POST /score`` (a history sent in the request → frames);
scoring a stored lead reads arrays (:mod:`leadscore.serving.lead_read`), never frames.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from leadscore.history import empty_table
from leadscore.tables import TableSpec


def _none_if_na(value: Any) -> Any:
    if value is None:
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        return value
    return value



def frame_rows(frame: pd.DataFrame, spec: TableSpec) -> Iterable[dict[str, Any]]:
    """Canonical CRM frame → plain rows in the stored form (timestamps as microseconds)."""
    cols = [c for c in spec.columns if c in frame.columns]
    data: dict[str, list[Any]] = {}
    for col in cols:
        s = frame[col]
        if spec.columns[col] == "ts":
            vals = s.dt.tz_convert("UTC").dt.tz_localize(None).dt.as_unit("us")
            ints = vals.to_numpy(dtype="datetime64[us]").view("int64")
            data[col] = [None if na else int(x) for x, na in zip(ints, vals.isna().to_numpy(), strict=True)]
        else:
            data[col] = [_none_if_na(v) for v in s.tolist()]
            if spec.columns[col] == "int":
                data[col] = [None if v is None else int(v) for v in data[col]]
            elif spec.columns[col] == "float":
                data[col] = [None if v is None else float(v) for v in data[col]]
            elif spec.columns[col] == "bool":
                data[col] = [None if v is None else bool(v) for v in data[col]]
    for i in range(len(frame)):
        yield {c: data[c][i] for c in cols}


def empty_frame(spec: TableSpec) -> pd.DataFrame:
    """A zero-row canonical frame with exactly the contract's columns."""
    return empty_table(spec)[list(spec.columns)]


_NAT = np.iinfo(np.int64).min


def _column(kind: str, values: list[Any]) -> Any:
    """One canonical column from stored values (None = missing), through pandas' public constructors."""
    if kind in ("id", "str", "json"):
        return pd.array(values, dtype="str")
    if kind == "ts":
        ints = np.array([_NAT if v is None else v for v in values], dtype=np.int64)
        return pd.DatetimeIndex(ints.view("datetime64[us]")).tz_localize("UTC").array
    if kind == "float":
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    if kind == "int":
        return pd.array([None if v is None else int(v) for v in values], dtype="Int64")
    if kind == "bool":
        return pd.array([None if v is None else bool(v) for v in values], dtype="boolean")
    raise ValueError(f"unknown column kind {kind}")


def rows_frame(rows: list[dict[str, Any]], spec: TableSpec) -> pd.DataFrame:
    """Stored rows → a frame with the canonical dtypes of ``leadscore.history`` (``POST /score``, which
    scores a history sent in the request; the stored leads' scoring path reads arrays, not frames)."""
    if not rows:
        return empty_frame(spec)
    return pd.DataFrame({col: _column(kind, [r.get(col) for r in rows]) for col, kind in spec.columns.items()})
