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
    missing = [s["name"] for s in schema if s["name"] not in frame.columns]
    if missing:
        raise ValueError(f"feature frame is missing column(s) required by the model: {', '.join(missing)}")


def encode_frame(
    frame: pd.DataFrame, schema: Sequence[Mapping[str, Any]], encodings: Mapping[str, Sequence[str]],
    factorize: Callable[[str], tuple[np.ndarray, Any]] | None = None,
) -> np.ndarray:
    """A C-contiguous float64 matrix in schema order (what ``Booster.predict`` consumes fastest).

    Numeric columns are converted as one block; string columns through ``pd.Categorical`` against
    the fitted categories (unknown and missing → NaN), both vectorised. ``factorize``: a string column's
    ``pd.factorize`` by name, when the caller keeps them for other readers of the batch
    (:meth:`training.linear.FrameColumns.factorized`).
    """
    return encode_parts(frame, schema, encodings, factorize)[0]


def encode_parts(
    frame: pd.DataFrame, schema: Sequence[Mapping[str, Any]], encodings: Mapping[str, Sequence[str]],
    factorize: Callable[[str], tuple[np.ndarray, Any]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`encode_frame` and its numeric columns alone (rows x numeric columns in schema order, in the
    memory order pandas converts them to: the block converted once, which batch scoring's logistic terms
    read without gathering or copying it again)."""
    check_columns(frame, schema)
    X = np.empty((len(frame), len(schema)), dtype=np.float64)
    num = [j for j, s in enumerate(schema) if s["dtype"] != "str"]
    block = np.empty((len(frame), len(num)), dtype=np.float64)
    if num:
        names = [schema[j]["name"] for j in num]
        try:
            block = frame[names].to_numpy(dtype=np.float64, na_value=np.nan)  # its layout as pandas gives it
        except (ValueError, TypeError):
            for i, name in enumerate(names):
                try:
                    block[:, i] = pd.to_numeric(frame[name], errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
                except (ValueError, TypeError) as exc:
                    raise ValueError(f"feature {name!r} must be numeric: {exc}") from exc
        X[:, num] = block
    _put_codes(X, frame, schema, encodings, factorize)
    return X, block


def recode(x: np.ndarray, frame: pd.DataFrame, schema: Sequence[Mapping[str, Any]],
           encodings: Mapping[str, Sequence[str]],
           factorize: Callable[[str], tuple[np.ndarray, Any]] | None = None) -> np.ndarray:
    """:func:`encode_frame` of ``frame`` with other category tables (``encodings``: another target's), from
    ``x``, an encoding of the same frame: its numeric columns are copied, not converted again."""
    out = np.array(x, dtype=np.float64, order="C", copy=True)
    _put_codes(out, frame, schema, encodings, factorize)
    return out


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
