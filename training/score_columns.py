"""Batch scoring's text columns built in Arrow: what pandas would infer from object arrays, without the conversion.

``score_frame`` returns text columns (lead ids, stages, the JSON lists of reasons, trends, bands). Built as
object arrays, pandas 3 converts each to its ``str`` dtype (Arrow strings) element by element when the
frame is made, which cost more than the stage policy and the bands together. Here a column of few
distinct values is the Arrow ``take`` of its distinct values, and the JSON lists of sentences are written
compiled into an Arrow string array (:func:`json_list_column`), then wrapped in the dtype
pandas infers for text (``__from_arrow__``, no copy); on a pandas whose inferred text dtype is ``object``
the column stays an object array, as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from json.encoder import encode_basestring_ascii
from typing import Any

import numpy as np
import pandas as pd


def inferred_text_dtype() -> Any:
    """The dtype pandas gives a column built from an object array of text (pandas 3: ``str``)."""
    return pd.Series(np.array([""], dtype=object)).dtype


def _wrap(table: Any, dtype: Any) -> Any:
    """An Arrow string array as a column of ``dtype`` (object: Python strings, None where missing)."""
    if hasattr(dtype, "__from_arrow__"):
        return dtype.__from_arrow__(table)
    return np.array(table.to_pylist(), dtype=object)


def text_column(values: np.ndarray, dtype: Any) -> Any:
    """An object array of text and None (few distinct values) as a column of ``dtype``; an array without text
    (all None: pandas keeps ``object``) or with other values is returned as it is, for pandas to infer."""
    import pyarrow as pa

    if not hasattr(dtype, "__from_arrow__"):
        return values
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    distinct = uniques.tolist()
    if not distinct or not all(v.__class__ is str for v in distinct):  # all missing, or not text: as pandas infers
        return values
    return _wrap(pa.array([*distinct, None], type=pa.large_string()).take(np.where(codes < 0, len(uniques), codes)),
                 dtype)


def coded_column(codes: np.ndarray, labels: Sequence[str | None], dtype: Any) -> Any:
    """:func:`text_column` of ``labels`` taken at ``codes`` (-1: None) when the caller has the codes already
    (a constant, a factorised column): no object array built and factorised again."""
    import pyarrow as pa

    if not hasattr(dtype, "__from_arrow__") or not any(v.__class__ is str for v in labels):
        return np.array([*labels, None], dtype=object)[codes]  # as text_column returns it, for pandas to infer
    if not all(v is None or v.__class__ is str for v in labels):
        return text_column(np.array([*labels, None], dtype=object)[codes], dtype)
    return _wrap(pa.array([*labels, None], type=pa.large_string()).take(np.where(codes < 0, len(labels), codes)),
                 dtype)


def repeated_column(value: str, n: int, dtype: Any) -> Any:
    """``text_column`` of ``n`` copies of ``value`` (Arrow's ``repeat``: no codes to take)."""
    import pyarrow as pa

    if not hasattr(dtype, "__from_arrow__"):
        return coded_column(np.zeros(n, dtype=np.int64), [value], dtype)
    return _wrap(pa.repeat(pa.scalar(value, type=pa.large_string()), n), dtype)


def quoted_sentences(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """What :func:`json_list_column` copies the sentences from: each quoted as ``json.dumps`` quotes a string,
    in one byte buffer with their offsets (:func:`training.json_lists.quoted_buffers`)."""
    from leadscore.training.json_lists import quoted_buffers

    return quoted_buffers([encode_basestring_ascii(t) for t in texts])


def json_list_column(ids: np.ndarray, texts: Sequence[str], dtype: Any,
                     quoted: tuple[np.ndarray, np.ndarray] | None = None) -> Any:
    """Each row of ``ids`` (rows x k sentence ids into ``texts``, -1: none) as the JSON text of its list of
    sentences, ``json.dumps(list)`` exactly (each sentence quoted as ``json.dumps`` quotes a string, joined
    by ``", "`` in brackets; a -1 anywhere is skipped), as a column of ``dtype``: written compiled, rows in
    parallel (:func:`training.json_lists.json_lists_array`). ``quoted``: the texts' :func:`quoted_sentences`,
    when the caller keeps them for several columns or batches."""
    from leadscore.training.json_lists import json_lists_array

    ids = np.atleast_2d(np.asarray(ids, dtype=np.int64))
    return _wrap(json_lists_array(ids, quoted_sentences(texts) if quoted is None else quoted), dtype)


__all__ = ["coded_column", "inferred_text_dtype", "json_list_column", "quoted_sentences", "repeated_column", "text_column"]
