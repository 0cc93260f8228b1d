"""Feature frames → float64 matrices, with the category codes fitted at training time.

LightGBM wants numbers; string features (source, industry, ...) become integer codes whose table is
learned on the training months and shipped in the bundle, so serving encodes a value exactly as
training did. Values never seen in training (or too rare to learn from) become NaN, which LightGBM
routes like a missing value instead of guessing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, is_dataclass
from typing import Any

import numpy as np
import pandas as pd

from leadscore.training.dictionary_memo import DictionaryMemo

MAX_CATEGORIES = 200
MIN_CATEGORY_COUNT = 5


def spec_to_dict(spec: Any) -> dict[str, Any]:
    """A FeatureSpec (dataclass, pydantic model or dict) as a plain JSON-able dict."""
    if isinstance(spec, Mapping):
        return dict(spec)
    if hasattr(spec, "model_dump"):
        return dict(spec.model_dump(mode="json"))
    if is_dataclass(spec) and not isinstance(spec, type):
        return asdict(spec)
    return {k: getattr(spec, k) for k in ("name", "dtype", "group", "description", "template")}


def fit_encodings(
    frame: pd.DataFrame, schema: Sequence[Mapping[str, Any]], min_count: int = MIN_CATEGORY_COUNT
) -> dict[str, list[str]]:
    """Per string feature: its categories, most frequent first (ties by value), code = position."""
    out: dict[str, list[str]] = {}
    for spec in schema:
        if spec["dtype"] != "str":
            continue
        counts = frame[spec["name"]].dropna().astype(str).value_counts()
        counts = counts[counts >= min_count]
        ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_CATEGORIES]
        out[spec["name"]] = [k for k, _ in ordered]
    return out


def check_columns(frame: pd.DataFrame, schema: Sequence[Mapping[str, Any]]) -> None:
    """Raise naming every schema column the frame lacks."""
    have = set(frame.columns)  # a set: ``in frame.columns`` costs an index lookup per name
    missing = [s["name"] for s in schema if s["name"] not in have]
    if missing:
        raise ValueError(f"feature frame is missing column(s) required by the model: {', '.join(missing)}")


def encode_frame(
    frame: pd.DataFrame, schema: Sequence[Mapping[str, Any]], encodings: Mapping[str, Sequence[str]],
    factorize: Callable[[str], tuple[np.ndarray, Any]] | None = None,
) -> np.ndarray:
    """A C-contiguous float64 matrix in schema order (what ``Booster.predict`` consumes fastest).

    Numeric columns are converted as one block (:func:`numeric_block`); string columns through
    ``pd.Categorical`` against the fitted categories (unknown and missing → NaN), both vectorised.
    ``factorize``: a string column's ``pd.factorize`` by name, when the caller keeps them for other readers
    of the batch (:meth:`training.linear.FrameColumns.factorized`).
    """
    check_columns(frame, schema)
    X = np.empty((len(frame), len(schema)), dtype=np.float64)
    num = [j for j, s in enumerate(schema) if s["dtype"] != "str"]
    if num:
        X[:, num] = numeric_block(frame, [schema[j]["name"] for j in num])
    _put_codes(X, frame, schema, encodings, factorize)
    return X


def numeric_block(frame: pd.DataFrame, names: Sequence[str]) -> np.ndarray:
    """The columns ``names`` as float64 (rows x names, NaN missing), converted as one block in the memory
    order pandas gives it (one contiguous column per name); a column that will not convert is named."""
    try:
        return frame[list(names)].to_numpy(dtype=np.float64, na_value=np.nan)
    except (ValueError, TypeError):
        block = np.empty((len(names), len(frame)), dtype=np.float64)
        for i, name in enumerate(names):
            try:
                block[i] = pd.to_numeric(frame[name], errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"feature {name!r} must be numeric: {exc}") from exc
        return block.T


def numeric_rows(frame: pd.DataFrame, names: Sequence[str], out: np.ndarray, rows: Sequence[int],
                 locs: np.ndarray | None = None) -> None:
    """:func:`numeric_block` of ``names`` written transposed into ``out[rows]`` (one row of ``out`` per name):
    a column pandas holds as a numpy number array is copied as it is (``to_numpy(float64)`` of it: the
    same values), the others converted by :func:`numeric_block`. Batch scoring's column-major chunk: the
    sub-frame and its row-major interleave then transposed cost more than the rest of the encoding.
    ``locs``: the names' positions among the frame's (unique) columns, when the caller has them."""
    get = getattr(frame, "_get_column_array", None)  # pandas' own column accessor: no Series per column
    if get is None or not frame.columns.is_unique:
        out[list(rows)] = numeric_block(frame, names).T
        return
    rest: list[int] = []
    for i, loc in enumerate((frame.columns.get_indexer(list(names)) if locs is None else locs).tolist()):
        arr = get(loc)
        if isinstance(arr, np.ndarray) and arr.dtype.kind in "fiub":
            out[rows[i]] = arr
        else:
            rest.append(i)
    if rest:
        out[[rows[i] for i in rest]] = numeric_block(frame, [names[i] for i in rest]).T


def encode_columns(
    frame: pd.DataFrame, schema: Sequence[Mapping[str, Any]], tables: Sequence[Mapping[str, Sequence[str]]],
    factorize: Callable[[str], tuple[np.ndarray, Any]] | None = None,
    column: Callable[[str], pd.Series] | None = None,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """:func:`encode_frame` of ``frame`` for several targets' category tables at once, column-major: the
    numeric columns converted once, each table's codes added. Batch scoring's compiled passes read a
    column's values down the rows, so no row-major matrix is built per target.

    Returns ``values`` (C-contiguous, one row per column: rows ``0..n-1`` the schema columns, string columns
    coded by ``tables[0]``; then, per further table that codes differently, one row per string column) and
    per table the row of ``values`` its encoding reads for each schema column: ``values[slots[t]].T`` is
    ``encode_frame(frame, schema, tables[t])``. ``factorize``/``column``: a string column's factorisation
    and the column itself as the caller keeps them for the batch's other readers
    (:class:`training.linear.FrameColumns`).
    """
    locs = None
    if frame.columns.is_unique:  # the positions serve the check and the copy: one look-up
        locs = frame.columns.get_indexer([s["name"] for s in schema])
        if (locs < 0).any():
            check_columns(frame, schema)
    else:
        check_columns(frame, schema)
    n = len(schema)
    cat = [j for j, s in enumerate(schema) if s["dtype"] == "str"]
    num = [j for j, s in enumerate(schema) if s["dtype"] != "str"]
    extra = [t for t in range(1, len(tables)) if any(tables[t].get(schema[j]["name"], []) != tables[0].get(
        schema[j]["name"], []) for j in cat)]
    values = np.empty((n + len(cat) * len(extra), len(frame)), dtype=np.float64)
    if num:
        numeric_rows(frame, [schema[j]["name"] for j in num], values, num, None if locs is None else locs[num])
    slots = [np.arange(n, dtype=np.int64) for _ in tables]
    for e, t in enumerate(extra):
        slots[t][cat] = n + e * len(cat) + np.arange(len(cat))
    for j in cat:
        name = schema[j]["name"]
        col = frame[name] if column is None else column(name)
        if isinstance(col.dtype, pd.CategoricalDtype):  # its codes through each table's remap of the dictionary
            shifted = col.array.codes.astype(np.intp) + 1
            for t in (0, *extra):
                values[slots[t][j]] = category_remap(col, tables[t].get(name, ()))[shifted]
            continue
        factorized = None if factorize is None else factorize(name)
        for t in (0, *extra):
            codes = category_codes(col, tables[t].get(name, ()), factorized)
            values[slots[t][j]] = np.where(codes < 0, np.nan, codes)
    return values, slots


def category_remap(col: pd.Series, categories: Sequence[str]) -> np.ndarray:
    """For a categorical ``col``: its encoding by ``categories`` per code + 1 (float64, NaN: unknown; entry 0
    a missing value), so ``category_remap(col, c)[codes + 1]`` is :func:`category_codes` of the column.
    Worked out by :func:`category_codes` itself over one value per category and a missing one, once per
    dictionary and table (batch scoring: every chunk's columns share the run's dictionaries,
    :func:`features.engine.take_coded`), then kept."""
    dtype = col.dtype

    def make() -> np.ndarray:
        probe = pd.Series(pd.Categorical.from_codes(np.arange(-1, len(dtype.categories)), dtype=dtype))
        codes = category_codes(probe, categories)
        return np.where(codes < 0, np.nan, codes).astype(np.float64)

    return _REMAPS.get(dtype, categories, make)


#: per (categorical dtype, category table): :func:`category_remap`
_REMAPS = DictionaryMemo()


def _put_codes(X: np.ndarray, frame: pd.DataFrame, schema: Sequence[Mapping[str, Any]],
               encodings: Mapping[str, Sequence[str]], factorize: Callable[[str], tuple[np.ndarray, Any]] | None) -> None:
    """Write each string column's category codes (unknown and missing: NaN) into its column of ``X``."""
    for j, spec in enumerate(schema):
        if spec["dtype"] == "str":
            codes = category_codes(frame[spec["name"]], encodings.get(spec["name"], []),
                                   None if factorize is None else factorize(spec["name"]))
            X[:, j] = np.where(codes < 0, np.nan, codes)


def category_codes(col: pd.Series, categories: Sequence[str],
                   factorized: tuple[np.ndarray, Any] | None = None) -> np.ndarray:
    """Each value's position in ``categories`` (-1: unknown or missing), as
    ``pd.Categorical(col.astype("str"), categories=categories).codes`` gives it, but converting and looking
    up each distinct value once (batch scoring: the per-row ``astype`` cost more than a prediction).
    ``factorized``: ``pd.factorize(col, use_na_sentinel=True)`` already computed."""
    pos = {c: i for i, c in enumerate(categories)}

    def lookup(texts: list[Any]) -> list[int]:
        return [pos.get(t, -1) if isinstance(t, str) else -1 for t in texts]  # a missing value stays missing

    codes, uniques = factorized if factorized is not None else pd.factorize(col, use_na_sentinel=True)
    values = uniques.tolist()
    if not all(v.__class__ is str for v in values):  # a str is its own text
        values = pd.Series(uniques, dtype=object).astype("str").tolist()
    out = np.asarray([*lookup(values), -1], dtype=np.int64)[codes]
    missing = np.flatnonzero(codes < 0)
    if len(missing):  # as astype("str") words them (pandas 2: "None"/"nan"; 3: missing); a typed column
        # holds one missing value (its dtype's), an object column any of None, NaN, NA
        if col.dtype == object:
            out[missing] = lookup(col.iloc[missing].astype("str").tolist())
        else:
            text = _MISSING_TEXT.get(col.dtype)
            if text is None:  # a one-row astype costs more than the rest of the column: once per dtype
                text = _MISSING_TEXT[col.dtype] = col.iloc[missing[:1]].astype("str").tolist()
            out[missing] = lookup(text)
    return out


#: per typed column dtype, its missing value as ``astype("str")`` words it (:func:`category_codes`)
_MISSING_TEXT: dict[Any, list[Any]] = {}


def categorical_indices(schema: Sequence[Mapping[str, Any]]) -> list[int]:
    return [j for j, s in enumerate(schema) if s["dtype"] == "str"]
