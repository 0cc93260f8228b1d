"""Which values of a numeric column read the same in a reason: word each *shown* value once, not each float.

Batch scoring words the reasons of a chunk at once (:func:`training.reasons.concept_text_ids`). A column's
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
words them by their exact value. The tests hold every unit's key groups to the one-value rule.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

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


def _rounded(s: np.ndarray, cls: np.ndarray, shown: np.ndarray, exact: np.ndarray, mask: np.ndarray,
             code: np.ndarray | int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where ``mask``: ``rint(s)`` as the shown number, class ``code``; exact where ``s`` is near a half."""
    r = np.rint(s)
    near_half = np.abs(np.abs(s - r) - 0.5) <= 1e-9 * (np.abs(s) + 1.0)
    return np.where(mask, code, cls), np.where(mask, r, shown), exact | (mask & near_half)


def display_keys(unit: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(key, exact)`` per value of ``v`` (float64) of a column of unit code ``unit`` (per value, or one):
    equal keys of one column word equal sentences where ``exact`` is false (module docstring)."""
    v = np.asarray(v, dtype=np.float64)
    unit = np.broadcast_to(np.asarray(unit, dtype=np.int64), v.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        missing = np.isnan(v)
        big = ~missing & ~(np.abs(v) <= _BIG)  # inf too
        safe = np.where(big | missing, 0.0, v)
        whole = safe == np.floor(safe)
        small = np.abs(safe) < 10.0
        plain, number, ratio = unit == PLAIN, unit == NUMBER, unit == RATIO
        days, money = unit == DAYS, unit == MONEY
        cls = np.full(v.shape, _INT, dtype=np.int64)
        shown = safe.copy()  # the integer of an _INT value
        exact = big.copy()
        # format_value: integers whole, else 2 decimals under 10 and 1 from 10 on; number: integers whole,
        # else 2 decimals (with thousands separators); ratio: always 1 decimal
        cents = ((plain & small) | number) & ~whole
        tenths = (plain & ~small & ~whole) | ratio
        cls, shown, exact = _rounded(safe * 100.0, cls, shown, exact, cents, _CENTS)
        cls, shown, exact = _rounded(safe * 10.0, cls, shown, exact, tenths, _TENTHS)
        # _days: "less than a day", "1 day", "{int(v)} days"
        cls = np.where(days, _DAYS, cls)
        shown = np.where(days, np.where(safe < 1.0, -1.0, np.where(safe < 2.0, 1.0, np.trunc(safe))), shown)
        # _money: under 1,000 to the unit; else v / (1e9, 1e6 or 1e3) to 3 significant digits
        under = money & (safe < 1e3)
        cls, shown, exact = _rounded(safe, cls, shown, exact, under, _UNITS)
        d = np.where(safe >= 1e9, 2, np.where(safe >= 1e6, 1, 0))
        w = safe / np.array([1e3, 1e6, 1e9])[d]
        digits = np.where(w < 10.0, 0, np.where(w < 100.0, 1, 2))
        amount = money & ~under
        cls, shown, exact = _rounded(w * np.array([100.0, 10.0, 1.0])[digits], cls, shown, exact, amount,
                                     _MONEY + 3 * d + digits)
        cls = np.where(v == 0.0, _ZERO, np.where(v == 1.0, _ONE, cls))
        cls = np.where(missing, _MISSING, cls)
        shown = np.where((cls == _ZERO) | (cls == _ONE) | missing | big, 0.0, shown)
    key = (shown.astype(np.int64) * _CLASSES + cls) * 2 + np.signbit(v)
    return key, exact & ~missing


def first_rows(codes: np.ndarray, n: int) -> np.ndarray:
    """The first position of each of the codes ``0..n-1`` in ``codes`` (each code occurs)."""
    first = np.empty(n, dtype=np.intp)
    first[codes[::-1]] = np.arange(len(codes) - 1, -1, -1)
    return first


__all__ = ["DAYS", "MONEY", "NUMBER", "PLAIN", "RATIO", "display_keys", "first_rows", "unit_codes"]
