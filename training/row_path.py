"""One row through a bound bundle: the serving path, built once per bundle, numpy end to end.

Serving scores one lead per request: both targets' calibrated probabilities and the sql model's
reasons. Through the batch API (a DataFrame, ``Booster.predict``) that costs ~10x the models' own
arithmetic: ``Booster.predict`` builds a predictor and parses its parameters on every call, and a
per-feature Python loop encodes the row. :class:`RowScorer` resolves everything that does not depend
on the row once (column positions, category code tables, the logistic model's coefficient arrays, the
calibration curves) and each call then does:

* one encoding of the row into a float64 vector (numeric columns by one ``itemgetter``, category
  codes per target), shared by the prediction and the reasons of that row (:meth:`RowScorer.encode`);
* the trees through LightGBM's single-row C entry (:class:`SingleRowBooster`): the parameters are
  parsed and the predictor built once (``LGBM_BoosterPredictForMatSingleRowFastInit``), each call only
  walks the trees (prediction) or runs TreeSHAP (contributions), bit-identical to ``Booster.predict``;
  with the bundle's ``attribution`` ``path`` the contributions come from one walk of the compiled trees
  (:mod:`training.attribution`), whose margin (LightGBM's, to the bit) then gives that target's
  probability too, so a scored row walks the sql trees once;
* the logistic terms as one vectorised expression over the numeric columns (the arithmetic of
  :meth:`training.linear.LinearModel.terms`, in its order), a dict look-up per category term;
* the blend in log-odds and the calibration by ``np.interp`` (:mod:`training.calibration`).

The batch path (:meth:`training.bundle.BoundBundle.predict`) stays the reference: the tests hold this
path to it within 1e-12.
"""

from __future__ import annotations

import ctypes
import math
import operator
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from leadscore.training.linear import _category_value, signed_log

if TYPE_CHECKING:
    from leadscore.reasons import Attribution
    from leadscore.training.bundle import FeatureColumn, TargetModel
    from leadscore.training.linear import LinearModel

_LOGIT_CLIP = 1e-9  # training.linear.logit's clip


class SingleRowBooster:
    """A LightGBM model for single rows through the C entry points that keep their predictor.

    ``LGBM_BoosterPredictForMatSingleRowFastInit`` parses the parameters and builds the predictor
    once per kind (probability, contributions); each call then only runs it. The booster is loaded
    from the model text (its own C handle, nothing of ``lightgbm.Booster``'s internals is used);
    ``lightgbm.basic._LIB`` is the loaded library. A fast config is not re-entrant in LightGBM, hence
    a lock per kind.
    """

    _NORMAL = 0  # C_API_PREDICT_NORMAL
    _CONTRIB = 3  # C_API_PREDICT_CONTRIB
    _DTYPE_FLOAT64 = 1  # C_API_DTYPE_FLOAT64

    def __init__(self, model_str: str, n_features: int) -> None:
        from lightgbm.basic import _LIB

        self._lib = _LIB
        self._n = n_features
        self._handle = ctypes.c_void_p()
        n_iter = ctypes.c_int(0)
        self._check(_LIB.LGBM_BoosterLoadModelFromString(ctypes.c_char_p(model_str.encode()), ctypes.byref(n_iter),
                                                         ctypes.byref(self._handle)))
        self._configs: list[ctypes.c_void_p] = []
        self._buffers: list[tuple[np.ndarray, np.ndarray, ctypes.c_int64]] = []
        self._predict = self._kind(self._NORMAL, 1)
        self._contrib = self._kind(self._CONTRIB, n_features + 1)

    def _check(self, rc: int) -> None:
        if rc != 0:
            raise RuntimeError(self._lib.LGBM_GetLastError().decode())

    def _kind(self, predict_type: int, width: int) -> Callable[[np.ndarray], np.ndarray]:
        config = ctypes.c_void_p()
        self._check(self._lib.LGBM_BoosterPredictForMatSingleRowFastInit(
            self._handle, ctypes.c_int(predict_type), ctypes.c_int(0), ctypes.c_int(-1),
            ctypes.c_int(self._DTYPE_FLOAT64), ctypes.c_int32(self._n), ctypes.c_char_p(b"num_threads=1"),
            ctypes.byref(config)))
        self._configs.append(config)
        out = np.empty(width, dtype=np.float64)
        inp = np.empty(self._n, dtype=np.float64)  # the row is copied here: its pointer is built once
        length = ctypes.c_int64(0)
        self._buffers.append((inp, out, length))  # kept alive with the booster
        args = (config, ctypes.c_void_p(inp.ctypes.data), ctypes.byref(length),
                out.ctypes.data_as(ctypes.POINTER(ctypes.c_double)))
        lock = threading.Lock()
        fn, check = self._lib.LGBM_BoosterPredictForMatSingleRowFast, self._check

        def run(x: np.ndarray) -> np.ndarray:
            with lock:
                np.copyto(inp, x.reshape(-1), casting="same_kind")
                check(fn(*args))
                return out.copy()

        return run

    def predict(self, x: np.ndarray) -> float:
        """The model's probability for the single row ``x`` (float64, n features)."""
        return float(self._predict(x)[0])

    def contrib(self, x: np.ndarray) -> np.ndarray:
        """TreeSHAP contributions of the single row ``x`` + the bias as the last entry."""
        return self._contrib(x)

    def __del__(self) -> None:
        lib = getattr(self, "_lib", None)
        if lib is None:
            return
        for config in getattr(self, "_configs", ()):
            if config.value:
                lib.LGBM_FastConfigFree(config)
        if getattr(self, "_handle", None) is not None and self._handle.value:
            lib.LGBM_BoosterFree(self._handle)


def _getter(names: Sequence[str]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """``row -> tuple of row[name]`` in C (``itemgetter`` returns a bare value for one name)."""
    if not names:
        return lambda row: ()
    if len(names) == 1:
        name = names[0]
        return lambda row: (row[name],)
    return operator.itemgetter(*names)


def _missing(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and v != v)


@dataclass(frozen=True)
class _Linear:
    """A logistic model's row arithmetic, positions resolved against the schema."""

    intercept: float
    num_pos: np.ndarray  # schema position of each numeric term
    fill: np.ndarray
    center: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    miss_coef: np.ndarray
    cat_pos: list[int]  # schema position of each category term
    cat_coefs: list[dict[str, float]]
    term_pos: np.ndarray  # schema position of every term, in the model's order (numeric, then categorical)
    means: np.ndarray  # per schema column: the term's fit-row mean (0 without a term)

    @classmethod
    def of(cls, model: LinearModel, names: list[str]) -> _Linear:
        pos = {n: j for j, n in enumerate(names)}
        t = model.numeric
        means = np.zeros(len(names))
        for name, m in model.term_means.items():
            if name in pos:
                means[pos[name]] = m
        return cls(model.intercept, np.array([pos[x.name] for x in t], dtype=np.intp),
                   np.array([x.fill for x in t], dtype=np.float64), np.array([x.center for x in t], dtype=np.float64),
                   np.array([x.scale for x in t], dtype=np.float64), np.array([x.coef for x in t], dtype=np.float64),
                   np.array([x.missing_coef or 0.0 for x in t], dtype=np.float64),
                   [pos[c.name] for c in model.categorical], [c.coefs for c in model.categorical],
                   np.array([pos[n] for n in model.features], dtype=np.intp), means)

    def terms(self, x: np.ndarray, values: tuple[Any, ...]) -> np.ndarray:
        """Each term in the model's order (``LinearModel.terms`` of one row): ``x`` the numeric schema
        vector, ``values`` the raw row values in schema order (for the category terms)."""
        v = x[self.num_pos]
        miss = np.isnan(v)
        out = np.empty(len(self.term_pos))
        k = len(v)
        out[:k] = self.coef * ((signed_log(np.where(miss, self.fill, v)) - self.center) / self.scale) \
            + self.miss_coef * miss
        for i, (j, coefs) in enumerate(zip(self.cat_pos, self.cat_coefs, strict=True), start=k):
            v = values[j]
            out[i] = coefs.get(v if v.__class__ is str else _category_value(v), 0.0)
        return out

    def probability(self, terms: np.ndarray) -> float:
        return 1.0 / (1.0 + math.exp(-(self.intercept + float(terms.sum()))))

    def contributions(self, terms: np.ndarray) -> np.ndarray:
        """Exact linear SHAP values per schema column (term minus its fit-row mean)."""
        out = np.zeros(len(self.means))
        out[self.term_pos] = terms
        return out - self.means


def _logit(p: float) -> float:
    p = min(max(p, _LOGIT_CLIP), 1.0 - _LOGIT_CLIP)
    return math.log(p / (1.0 - p))


class _Target:
    """One target's model, resolved for single rows."""

    def __init__(self, model: TargetModel, schema: Sequence[FeatureColumn], cat_idx: list[int],
                 attribution: Attribution) -> None:
        self.kind = model.kind
        self.weight = model.blend_weight
        self.cal_x, self.cal_y = model.calibrator.x, model.calibrator.y
        names = [s["name"] for s in schema]
        self.codes = [{v: float(i) for i, v in enumerate(model.encodings.get(names[j], []))} for j in cat_idx]
        self.trees = SingleRowBooster(model.model_str, len(schema)) if model.uses_trees and model.model_str else None
        self.paths = model.path_model(len(schema)) if self.trees is not None and attribution == "path" else None
        #: the margin of a path walk gives the probability LightGBM would (its binary sigmoid, scale 1)
        self.margin_is_logit = self.paths is not None and self.paths.binary_logit
        if self.margin_is_logit:
            from leadscore.training.attribution import logistic  # numba: loaded with the path model

            self._logistic = logistic
        self.linear = _Linear.of(model.linear, names) if model.linear is not None and model.kind != "lightgbm" \
            else None

    def raw(self, x: np.ndarray, terms: np.ndarray | None, margin: float | None = None) -> float:
        """The uncalibrated probability of this kind (``TargetModel.combine`` for one row); ``margin``: the
        trees' raw score from a path walk of this row, if one ran."""
        if self.trees is None:
            p_trees = None
        elif margin is not None and self.margin_is_logit:
            p_trees = self._logistic(margin)
        else:
            p_trees = self.trees.predict(x)
        if self.linear is None:
            assert p_trees is not None
            return p_trees
        assert terms is not None
        p_linear = self.linear.probability(terms)
        if p_trees is None:
            return p_linear
        w = float(self.weight)  # type: ignore[arg-type]
        return 1.0 / (1.0 + math.exp(-(w * _logit(p_trees) + (1.0 - w) * _logit(p_linear))))

    def contributions(self, x: np.ndarray, terms: np.ndarray | None, n: int) -> tuple[np.ndarray, float | None]:
        """Per-feature log-odds contributions in schema order (``TargetModel.combine_contributions``), and
        the trees' margin when the path walk gave it."""
        trees, margin = None, None
        if self.paths is not None:
            margin, trees = self.paths.row(x)
        elif self.trees is not None:
            trees = self.trees.contrib(x)[:n]
        linear = None if self.linear is None or terms is None else self.linear.contributions(terms)
        if linear is None:
            assert trees is not None
            return trees, margin
        if trees is None:
            return linear, margin
        w = float(self.weight)  # type: ignore[arg-type]
        return w * trees + (1.0 - w) * linear, margin


@dataclass
class EncodedRow:
    """One row as the models read it: the raw values (schema order) and, lazily, per target the
    float64 model input and the logistic terms."""

    values: tuple[Any, ...]
    numeric: np.ndarray  # float64 over the schema, NaN at the category columns
    _x: dict[str, np.ndarray]
    _terms: dict[str, np.ndarray | None]
    #: per target the trees' margin, when a path walk of this row gave it
    _margin: dict[str, float] = field(default_factory=dict)


class RowScorer:
    """A bound bundle's single-row path (module docstring); built once per bundle, thread-safe."""

    def __init__(self, schema: Sequence[FeatureColumn], models: Mapping[str, TargetModel],
                 attribution: Attribution = "path") -> None:
        self.names = [s["name"] for s in schema]
        self.n = len(self.names)
        self.cat_idx = [j for j, s in enumerate(schema) if s["dtype"] == "str"]
        self.num_idx = np.array([j for j, s in enumerate(schema) if s["dtype"] != "str"], dtype=np.intp)
        self._all = _getter(self.names)
        self._num = _getter([self.names[j] for j in self.num_idx])
        self.targets = {t: _Target(m, schema, self.cat_idx, attribution) for t, m in models.items()}

    def encode(self, row: Mapping[str, Any]) -> EncodedRow:
        """Read the row once; ``ValueError`` naming a missing feature or a non-numeric value."""
        try:
            values = self._all(row)
        except KeyError as exc:
            missing = next(n for n in self.names if n not in row)
            raise ValueError(f"feature {missing!r} is missing from the row") from exc
        numeric = np.full(self.n, np.nan)
        try:
            numeric[self.num_idx] = np.array(self._num(row), dtype=np.float64)  # None → NaN
        except (TypeError, ValueError):  # pd.NA, or a value to name
            for j in self.num_idx:
                v = values[j]
                try:
                    numeric[j] = np.nan if _missing(v) else float(v)
                except (TypeError, ValueError) as exc:
                    raise ValueError(f"feature {self.names[j]!r} must be numeric, got {v!r}") from exc
        return EncodedRow(values, numeric, {}, {})

    def x(self, enc: EncodedRow, target: str) -> np.ndarray:
        """The target's 1×n model input: the numeric columns and its category codes (unknown → NaN)."""
        x = enc._x.get(target)
        if x is None:
            x = enc.numeric.copy()
            values = enc.values
            for j, codes in zip(self.cat_idx, self.targets[target].codes, strict=True):
                v = values[j]
                x[j] = codes.get(v, math.nan) if v.__class__ is str else math.nan if _missing(v) \
                    else codes.get(str(v), math.nan)
            x = enc._x[target] = x.reshape(1, -1)
        return x

    def _terms(self, enc: EncodedRow, target: str) -> np.ndarray | None:
        if target not in enc._terms:
            lin = self.targets[target].linear
            enc._terms[target] = None if lin is None else lin.terms(enc.numeric, enc.values)
        return enc._terms[target]

    def probabilities(self, enc: EncodedRow) -> dict[str, float]:
        """Calibrated probability per target."""
        out = {}
        for target, t in self.targets.items():
            raw = t.raw(self.x(enc, target), self._terms(enc, target), enc._margin.get(target))
            out[target] = float(np.interp(raw, t.cal_x, t.cal_y))
        return out

    def contributions(self, enc: EncodedRow, target: str) -> np.ndarray:
        """Per-feature log-odds contributions of one target's model, schema order, no bias (a path walk
        keeps its margin on ``enc`` for :meth:`probabilities`)."""
        contrib, margin = self.targets[target].contributions(self.x(enc, target), self._terms(enc, target), self.n)
        if margin is not None:
            enc._margin[target] = margin
        return contrib
