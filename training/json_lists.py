"""Batch scoring's JSON lists of reasons, written byte by byte (numba) into an Arrow string array.

A chunk's ``reasons_positive``/``reasons_negative`` are, per row, ``json.dumps`` of a list of at most
``k`` sentences out of a few thousand, each already quoted once per run as ``json.dumps`` quotes a string
(``encode_basestring_ascii``: ASCII only, so a character is a byte). The list is then ``[``, the quoted
sentences joined by ``", "``, ``]``: here its length is counted per row, the offsets summed, and the bytes
copied into one buffer, rows in parallel, which Arrow takes as a ``large_string`` array without a copy.
Arrow's own take-and-join cost about twice as much, and held the GIL for parts of it.

Imported when first used: numba compiles on first call (cached on disk).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numba import njit, prange, uint64

_OPEN, _CLOSE, _COMMA, _SPACE = ord("["), ord("]"), ord(","), ord(" ")


def quoted_buffers(quoted: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Quoted sentences (ASCII) as one byte buffer and their offsets into it (``offsets[t]:offsets[t + 1]``)."""
    data = "".join(quoted).encode("ascii")
    offsets = np.zeros(len(quoted) + 1, dtype=np.int64)
    np.cumsum(np.fromiter((len(q) for q in quoted), dtype=np.int64, count=len(quoted)), out=offsets[1:])
    return offsets, np.frombuffer(data, dtype=np.uint8)


def json_lists_array(ids: np.ndarray, buffers: tuple[np.ndarray, np.ndarray]) -> Any:
    """Each row of ``ids`` (rows x k sentence ids, -1: none, skipped anywhere) as the JSON text of its list
    of the ``buffers``' sentences (:func:`quoted_buffers`), ``json.dumps(list)`` to the byte, as an Arrow
    ``large_string`` array."""
    import pyarrow as pa

    offsets, data = buffers
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if ids.size and (ids.max() >= len(offsets) - 1):
        raise IndexError(f"sentence id {int(ids.max())} out of range: {len(offsets) - 1} sentences")
    from leadscore.training.attribution import _PARALLEL

    ends = np.zeros(len(ids) + 1, dtype=np.int64)
    # numba's fallback threading layer aborts on parallel kernels run at once: batch scoring writes the lists
    # on a helper thread, and another caller's pass may be running
    with _PARALLEL:
        _lengths(ids, offsets, ends[1:])
        np.cumsum(ends, out=ends)
        out = np.empty(int(ends[-1]), dtype=np.uint8)
        _fill(ids, offsets, data, ends, out)
    return pa.LargeStringArray.from_buffers(len(ids), pa.py_buffer(ends), pa.py_buffer(out))


@njit(cache=True, parallel=True, nogil=True)
def _lengths(ids: np.ndarray, offsets: np.ndarray, lengths: np.ndarray) -> None:
    """Per row the byte length of its JSON list: the brackets, its sentences and a ``", "`` between two."""
    for r in prange(ids.shape[0]):
        size = 2
        shown = 0
        for q in range(ids.shape[1]):
            t = ids[r, q]
            if t >= 0:
                size += offsets[t + 1] - offsets[t] + (2 if shown else 0)
                shown += 1
        lengths[r] = size


@njit(cache=True, parallel=True, nogil=True)
def _fill(ids: np.ndarray, offsets: np.ndarray, data: np.ndarray, ends: np.ndarray, out: np.ndarray) -> None:
    """Row ``r``'s JSON list into ``out[ends[r]:ends[r + 1]]``. The byte positions are unsigned: a signed
    index is checked for a negative value on every byte (numba's wraparound), which cost twice the copy."""
    for r in prange(ids.shape[0]):
        p = uint64(ends[r])
        out[p] = _OPEN
        p += uint64(1)
        shown = False
        for q in range(ids.shape[1]):
            t = ids[r, q]
            if t < 0:
                continue
            if shown:
                out[p] = _COMMA
                out[p + uint64(1)] = _SPACE
                p += uint64(2)
            shown = True
            c, end = uint64(offsets[t]), uint64(offsets[t + 1])
            while c < end:
                out[p] = data[c]
                p += uint64(1)
                c += uint64(1)
        out[p] = _CLOSE

__all__ = ["json_lists_array", "quoted_buffers"]
