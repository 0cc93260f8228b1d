"""Stored rows ↔ canonical CRM frames (the dtypes of :mod:`leadscore.history`), fast.

The scoring path builds five small frames per request; through ``pd.array``/``pd.DataFrame`` that
costs more than the features themselves, so the builders here make the very same arrays directly
(checked at import against the public constructors; any difference and the public ones are used).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from leadscore.history import empty_table
from leadscore.serving.queries import LEAD_COLS
from leadscore.tables import ACCOUNTS, ACTIVITIES, LEADS, TableSpec

if TYPE_CHECKING:
    from leadscore.serving.cache import ActivityColumns


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


_EMPTY: dict[str, pd.DataFrame] = {}


def empty_frame(spec: TableSpec) -> pd.DataFrame:
    """A zero-row canonical frame with exactly the contract's columns (built once per table)."""
    if spec.name not in _EMPTY:
        _EMPTY[spec.name] = empty_table(spec)[list(spec.columns)]
    return _EMPTY[spec.name].copy(deep=False)


_NAT = np.iinfo(np.int64).min


# ----------------------------------------------------------------------------- canonical arrays, fast

_STR_DTYPE = pd.array(["a"], dtype="str").dtype
_TS_DTYPE = pd.DatetimeTZDtype("us", "UTC")
_ArrowStringArray: Any = pd.arrays.ArrowStringArray
_DatetimeArray: Any = pd.arrays.DatetimeArray
_IntegerArray: Any = pd.arrays.IntegerArray
_BooleanArray: Any = pd.arrays.BooleanArray


def _public_str(values: Any) -> Any:
    return pd.array(values, dtype="str")


def _fast_str(values: Any) -> Any:
    """Strings (None = missing) as the canonical ``str`` array, via one Arrow array."""
    if not isinstance(values, (pa.Array, pa.ChunkedArray)):
        try:
            values = pa.array(values, type=pa.large_string())
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # not all str (SQLite is dynamically typed)
            return pd.array(values, dtype="str")
    if isinstance(values, pa.Array):
        values = pa.chunked_array([values], type=pa.large_string())
    return _ArrowStringArray(values, dtype=_STR_DTYPE)


def _public_ts(ints: np.ndarray) -> Any:
    return pd.DatetimeIndex(ints.view("datetime64[us]")).tz_localize("UTC").array


def _fast_ts(ints: np.ndarray) -> Any:
    """int64 µs (int64 min = missing) as ``datetime64[us, UTC]``."""
    return _DatetimeArray._simple_new(ints.view("datetime64[us]"), dtype=_TS_DTYPE)


def _public_frame(data: dict[str, Any], n: int) -> pd.DataFrame:
    return pd.DataFrame(data, copy=False)


_COLUMN_INDEX: dict[tuple[str, ...], pd.Index] = {}


def _fast_frame(data: dict[str, Any], n: int) -> pd.DataFrame:
    names = tuple(data)
    columns = _COLUMN_INDEX.get(names)
    if columns is None:
        columns = _COLUMN_INDEX[names] = pd.Index(list(names))
    return pd.DataFrame._from_arrays(  # type: ignore[attr-defined,no-any-return]
        list(data.values()), columns=columns, index=pd.RangeIndex(n), verify_integrity=False
    )


def _pick_builders() -> tuple[Any, Any, Any]:
    """The fast builders if they give what the public ones give on this pandas, else the public ones."""
    try:
        probe = ["a", None]
        ints = np.array([1_700_000_000_000_000, _NAT], dtype=np.int64)
        s, t = _fast_str(probe), _fast_ts(ints)
        pd.testing.assert_extension_array_equal(s, _public_str(probe))
        pd.testing.assert_extension_array_equal(t, _public_ts(ints))
        data = {"s": s, "t": t, "f": np.array([1.0, np.nan])}
        pd.testing.assert_frame_equal(_fast_frame(data, 2), _public_frame(data, 2))
        if type(s) is not type(_public_str(probe)) or s.dtype != _STR_DTYPE:
            raise TypeError("different string array")
        return _fast_str, _fast_ts, _fast_frame
    except Exception:  # a pandas without these internals: the public constructors
        return _public_str, _public_ts, _public_frame


_str_array, _ts_array, _frame = _pick_builders()


def _column(kind: str, values: list[Any]) -> Any:
    """One canonical column from stored values (None = missing)."""
    if kind in ("id", "str", "json"):
        return _str_array(values)
    if kind == "ts":
        return _ts_array(np.array([_NAT if v is None else v for v in values], dtype=np.int64))
    if kind == "float":
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    mask = np.array([v is None for v in values], dtype=bool)
    if kind == "int":
        return _IntegerArray(np.array([0 if v is None else int(v) for v in values], dtype=np.int64), mask)
    if kind == "bool":
        return _BooleanArray(np.array([False if v is None else bool(v) for v in values], dtype=bool), mask)
    raise ValueError(f"unknown column kind {kind}")


def columns_frame(names: list[str], rows: list[tuple[Any, ...]], spec: TableSpec) -> pd.DataFrame:
    """Like :func:`rows_frame` for tuples in ``names`` order; absent contract columns are left empty."""
    if not rows:
        return empty_frame(spec)
    pos = {name: j for j, name in enumerate(names)}
    n = len(rows)
    data: dict[str, Any] = {}
    for col, kind in spec.columns.items():
        j = pos.get(col)
        data[col] = _column(kind, [r[j] for r in rows] if j is not None else [None] * n)
    return _frame(data, n)


def rows_frame(rows: list[dict[str, Any]], spec: TableSpec) -> pd.DataFrame:
    """Stored rows → a frame with the canonical dtypes of ``leadscore.history``.

    Built from extension arrays directly: this runs on every scored activity, and going through
    ``pd.Series(...)`` per column costs several times more than the feature computation itself.
    """
    if not rows:
        return empty_frame(spec)
    data = {col: _column(kind, [r.get(col) for r in rows]) for col, kind in spec.columns.items()}
    return _frame(data, len(rows))


def _read_only(data: dict[str, Any]) -> dict[str, Any]:
    """Make the numpy buffers behind these columns read-only (Arrow arrays are immutable already), so
    a frame built on them can never write into what the memo hands to the next request."""
    for arr in data.values():
        for buf in (arr, getattr(arr, "_ndarray", None), getattr(arr, "_data", None), getattr(arr, "_mask", None)):
            if isinstance(buf, np.ndarray):
                buf.flags.writeable = False
    return data


class _FrameMemo:
    """The columns of frames already built from exactly these stored values (the key is the values
    themselves, read from the database on every request, so a hit can never be stale). Bounded,
    least recently used out first.

    It keeps columns, not frames, and builds each caller a new frame on them. Handing out shallow
    copies of kept frames made pandas' copy-on-write record a weak reference per copy and block on
    the kept frame (up to ~500 dead ones each before it prunes): in a long run hundreds of thousands
    of objects for the garbage collector to walk, and full-collection pauses that grew with uptime.
    A kept frame also costs the collector ~5x the objects of its columns. The columns are read-only.

    Bounded by entries *and* rows: each lead of an account keeps its own entry holding all its
    colleagues, so a 550-lead account alone would hold 550 x 550 rows (a soak grew ~100 MB filling a
    2,048-entry memo). A hit saves 0.03-0.3 ms of a ~17 ms request, so a small memo loses little.
    """

    def __init__(self, size: int = 512, max_rows: int = 50_000) -> None:
        self.size = size
        self.max_rows = max_rows
        self.rows = 0
        self.entries: dict[Any, tuple[dict[str, Any], int]] = {}
        self.lock = threading.Lock()

    def frame(self, key: Any, build: Callable[[], tuple[dict[str, Any], int]]) -> pd.DataFrame:
        with self.lock:
            entry = self.entries.pop(key, None)
            if entry is not None:
                self.entries[key] = entry  # most recent last
        if entry is None:
            data, n = build()
            entry = (_read_only(data), n)
            with self.lock:
                if key not in self.entries:
                    self.rows += n
                self.entries[key] = entry
                while len(self.entries) > 1 and (len(self.entries) > self.size or self.rows > self.max_rows):
                    self.rows -= self.entries.pop(next(iter(self.entries)))[1]
        data, n = entry
        return _frame(dict(data), n)


_LEADS_MEMO = _FrameMemo()


def leads_frame(lead: dict[str, Any], colleagues: list[tuple[Any, ...]]) -> pd.DataFrame:
    """The lead's full row, then its colleagues' ``LEAD_COLS`` (other columns missing)."""
    key = (tuple(lead.get(c) for c in LEADS.columns), tuple(colleagues))
    return _LEADS_MEMO.frame(key, lambda: _leads_columns(lead, colleagues))


_ACCOUNTS_MEMO = _FrameMemo()


def account_frame(account: dict[str, Any]) -> pd.DataFrame:
    key = tuple(account.get(c) for c in ACCOUNTS.columns)
    return _ACCOUNTS_MEMO.frame(key, lambda: ({col: _column(kind, [account.get(col)])
                                               for col, kind in ACCOUNTS.columns.items()}, 1))


def _leads_columns(lead: dict[str, Any], colleagues: list[tuple[Any, ...]]) -> tuple[dict[str, Any], int]:
    n = 1 + len(colleagues)
    data: dict[str, Any] = {}
    for col, kind in LEADS.columns.items():
        if col in LEAD_COLS:
            j = LEAD_COLS.index(col)
            values = [lead.get(col), *[c[j] for c in colleagues]]
        else:
            values = [lead.get(col), *[None] * len(colleagues)]
        data[col] = _column(kind, values)
    return data, n


def activities_frame(cols: ActivityColumns) -> pd.DataFrame:
    """Activity columns from the cache as the canonical frame (``properties`` is not read back)."""
    n = len(cols)
    if not n:
        return empty_frame(ACTIVITIES)
    data = {
        "activity_id": _str_array(cols.activity_id),
        "lead_id": _str_array(cols.lead_id),
        "occurred_at": _ts_array(np.ascontiguousarray(cols.occurred_at, dtype=np.int64)),
        "type": _str_array(cols.type),
        "properties": _str_array(pa.nulls(n, type=pa.large_string())),
        # not read back, like the SQL path (ACT_COLS): sales touches are recognised by type (features/actors.py)
        "actor": _str_array(pa.nulls(n, type=pa.large_string())),
    }
    return _frame({c: data[c] for c in ACTIVITIES.columns}, n)
