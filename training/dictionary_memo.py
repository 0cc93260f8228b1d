"""Tables worked out once per pair of objects (a run's categorical dictionary and what it is mapped by),
kept by the objects' identity.

Batch scoring's chunks hold their string columns as categoricals over the run's dictionaries
(``features.engine.compute_features(coded=True)``), so what is derived from a dictionary — its encoding by a
model's category table, a logistic term's coefficient per code — is the same for every chunk. Keyed by
``id`` (dtypes and tables hash slowly or not at all), the objects held with the value so their ids are not
reused while the entry lives; bounded (cleared past ``size`` entries).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


class DictionaryMemo:
    """``get(a, b, make)``: ``make()`` for the pair ``(a, b)``, computed once while both objects live."""

    def __init__(self, size: int = 1024) -> None:
        self._entries: dict[tuple[int, int], tuple[Any, Any, np.ndarray]] = {}
        self._size = size

    def get(self, a: Any, b: Any, make: Callable[[], np.ndarray]) -> np.ndarray:
        got = self._entries.get((id(a), id(b)))
        if got is not None and got[0] is a and got[1] is b:  # the objects held: their ids not reused
            return got[2]
        value = make()
        if len(self._entries) >= self._size:
            self._entries.clear()
        self._entries[(id(a), id(b))] = (a, b, value)
        return value


__all__ = ["DictionaryMemo"]
