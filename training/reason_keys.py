"""Which values of a numeric column read the same in a reason: word each *shown* value once, not each float.

Batch scoring words the reasons of a chunk at once (:mod:`training.reason_walk`). A column's
sentence depends only on its value as the reason shows it (:func:`training.reasons.format_value` and the
unit formats: "0.87", "3", "12 days", "1.5M"), and a chunk of decayed counts holds thousands of distinct
floats but a few hundred shown values. Here each value gets an integer key computed with array
arithmetic, such that two values of one column with the same key word the same sentence; the caller
words one value per key.

The key is the value's class (missing, zero, exactly one — the ``[one|many]`` template and the silent
zero depend on it —, an integer, a value shown to 2 or 1 decimals, a day count, a money amount's
divisor and digits) with its sign bit and its shown number: the integer, ``rint(v * 100)``,
``rint(v * 10)``, ``int(v)`` days. Python's ``f"{v:.2f}"`` (and ``.3g`` of an amount in [1, 1000))
rounds the exact binary value correctly; ``rint(v * 100)`` is that rounding except when ``v * 100`` lies
within its own rounding error of a half, so such values (and huge ones) are marked ``exact``: the caller
words them by their exact value. The tests hold every unit's key groups to the one-value rule. One
compiled pass over the values (numba, compiled on first use and cached on disk: imported when first used).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numba import njit

#: beyond this magnitude values are worded one by one (keys must fit in int64 with their class)
_BIG = 1e12
_MISSING, _ZERO, _ONE, _INT, _CENTS, _TENTHS, _DAYS, _UNITS = range(8)
_MONEY = 8  # + 3 x divisor (K, M, B) + digits after the point (2, 1, 0)
_CLASSES = 32
#: unit codes (:func:`unit_codes`): how :func:`training.reasons._shown` shows a float of the unit
PLAIN, DAYS, MONEY, NUMBER, RATIO = range(5)
_UNIT_CODE = {"days": DAYS, "money": MONEY, "number": NUMBER, "ratio": RATIO}


def unit_codes(units: Sequence[str]) -> np.ndarray:
    """Each unit's code (anything else is shown by ``format_value``: :data:`PLAIN`)."""
    return np.array([_UNIT_CODE.get(u, PLAIN) for u in units], dtype=np.int64)


@njit(cache=True)
def _key(shown: float, cls: int, negative: bool) -> int:
    return (int(shown) * _CLASSES + cls) * 2 + (1 if negative else 0)


@njit(cache=True)
def _near_half(s: float) -> bool:
    """``rint(s)`` may not be the correct rounding of the exact product ``s`` was rounded from."""
    return abs(abs(s - np.rint(s)) - 0.5) <= 1e-12 * (abs(s) + 1.0)  # the product is off by <= 1.2e-16 |s|


@njit(cache=True)
def display_key(u: int, x: float) -> tuple[int, bool]:
    """One value's ``(key, exact)`` (:func:`display_keys`); also called per cell by the compiled batch walk
    (:mod:`training.reason_walk`)."""
    neg = np.signbit(x)
    if x != x:
        return _key(0.0, _MISSING, neg), False
    if x == 0.0:
        return _key(0.0, _ZERO, neg), False
    if x == 1.0:
        return _key(0.0, _ONE, neg), False
    if not abs(x) <= _BIG:  # inf too
        return 0, True
    if u == DAYS:  # _days: "less than a day", "1 day", "{int(v)} days"
        return _key(-1.0 if x < 1.0 else (1.0 if x < 2.0 else np.trunc(x)), _DAYS, neg), False
    if u == MONEY:  # _money: under 1,000 to the unit; else / 1e9, 1e6 or 1e3 to 3 significant digits
        if x < 1e3:
            s, cls = x, _UNITS
        else:
            d = 2 if x >= 1e9 else (1 if x >= 1e6 else 0)
            w = x / (1e9 if d == 2 else (1e6 if d == 1 else 1e3))
            digits = 0 if w < 10.0 else (1 if w < 100.0 else 2)
            s = w * (100.0 if digits == 0 else (10.0 if digits == 1 else 1.0))
            cls = _MONEY + 3 * d + digits
        return _key(np.rint(s), cls, neg), _near_half(s)
    if x == np.floor(x) and u != RATIO:  # format_value and number: integers whole
        return _key(x, _INT, neg), False
    # ratio: 1 decimal; number: 2; format_value: 2 under 10, 1 from 10 on
    cents = u == NUMBER or (u == PLAIN and abs(x) < 10.0)
    s = x * 100.0 if cents else x * 10.0
    return _key(np.rint(s), _CENTS if cents else _TENTHS, neg), _near_half(s)


@njit(cache=True)
def _keys(unit: np.ndarray, v: np.ndarray, key: np.ndarray, exact: np.ndarray) -> None:
    for i in range(len(v)):
        key[i], exact[i] = display_key(unit[i], v[i])


def display_keys(unit: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(key, exact)`` per value of ``v`` (float64) of a column of unit code ``unit`` (per value):
    equal keys of one column word equal sentences where ``exact`` is false (module docstring)."""
    v = np.ascontiguousarray(v, dtype=np.float64)
    key = np.empty(len(v), dtype=np.int64)
    exact = np.empty(len(v), dtype=np.bool_)
    _keys(np.ascontiguousarray(np.broadcast_to(unit, v.shape), dtype=np.int64), v, key, exact)
    return key, exact


__all__ = ["DAYS", "MONEY", "NUMBER", "PLAIN", "RATIO", "display_key", "display_keys", "unit_codes"]
