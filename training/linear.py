"""The logistic model as plain numbers: one design, fitted with scikit-learn, stored in the bundle as JSON.

The logistic regression is both a baseline every model is compared with and a candidate that may be
shipped (on few rows or a drifting, mostly linear signal it can beat the boosted trees). A shipped
model must load without pickles, so it is kept as what it is: per numeric feature a median fill, a
signed-log transform, a centre and scale, a coefficient and (when the fit rows had missing values) a
missing-indicator coefficient; per string feature a coefficient per value seen at least
``min_frequency`` times (rarer and unknown values count as none); an intercept. The same
:meth:`LinearModel.terms` computes the design for fitting, batch scoring and a single row, so they
cannot disagree.

Reasons need per-feature contributions. For a linear model in log-odds, the exact SHAP value of a
feature (features treated as independent) is its term minus that term's mean on the fit rows, so the
model keeps those means (``term_means``): contributions plus ``offset`` equal the log-odds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from leadscore.training.dictionary_memo import DictionaryMemo

MISSING = "(missing)"
#: rows per block of :meth:`FrameColumns.signed_logs` (a few MB of temporaries per block)
_LOG_BLOCK = 8192


def signed_log(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-9, 1 - 1e-9)
    return np.asarray(np.log(p / (1 - p)))


def blend_probability(p_trees: np.ndarray, p_linear: np.ndarray, weight: float) -> np.ndarray:
    """The blend of a tree model and the linear model in log-odds: ``weight`` on the trees.

    In log-odds, not probability, so that per-feature contributions (both models explain log-odds)
    blend with the same weight and still add up to the blended score.
    """
    z = weight * logit(p_trees) + (1.0 - weight) * logit(p_linear)
    return np.asarray(1.0 / (1.0 + np.exp(-z)))


class FrameColumns:
    """A feature frame's columns as the logistic terms read them, each converted once per batch: numeric
    ones as float64 (``pd.to_numeric(errors="coerce")``), string ones as codes into their
    :func:`_category_value` labels. Both targets' models of a bundle read the same columns; converting
    them per model and per column cost more than the boosted trees' prediction."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self.rows = len(frame)
        self._numeric: dict[str, np.ndarray] = {}
        self._codes: dict[str, tuple[np.ndarray, list[str]]] = {}
        self._logs: dict[str, np.ndarray] = {}
        self._factorized: dict[str, tuple[np.ndarray, Any]] = {}
        self._columns: dict[str, pd.Series] = {}

    def column(self, name: str) -> pd.Series:
        """``frame[name]``, once per batch: pandas builds a new Series on every read (~60-80 us on a
        130-column frame with text column labels), and a string column is read by the encoding, the
        logistic terms and the reasons."""
        got = self._columns.get(name)
        if got is None:
            got = self._columns[name] = self.frame[name]
        return got

    def numeric(self, names: Sequence[str]) -> np.ndarray:
        """The columns ``names`` as a (names x rows) float64 array (missing and non-numeric values NaN)."""
        todo = [n for n in dict.fromkeys(names) if n not in self._numeric]
        if todo:
            try:  # one block conversion; a column that will not convert falls back to coercion below
                block = self.frame[todo].to_numpy(dtype=np.float64, na_value=np.nan).T
            except (ValueError, TypeError):
                block = np.array([pd.to_numeric(self.frame[n], errors="coerce").to_numpy(dtype=np.float64,
                                                                                        na_value=np.nan)
                                  for n in todo], dtype=np.float64).reshape(len(todo), self.rows)
            self._numeric.update(zip(todo, block, strict=True))
        out = np.empty((len(names), self.rows), dtype=np.float64)
        for i, n in enumerate(names):
            out[i] = self._numeric[n]
        return out

    def signed_logs(self, names: Sequence[str]) -> np.ndarray:
        """:func:`signed_log` of :meth:`numeric` (NaN where missing) as a (names x rows) array, computed once
        per column and batch (both targets' logistic models read the same columns), in blocks of rows: on a
        training table (200k rows) whole-array temporaries cost more than the arithmetic."""
        todo = [n for n in dict.fromkeys(names) if n not in self._logs]
        if todo:
            x = self.numeric(todo)
            for lo in range(0, self.rows, _LOG_BLOCK):
                x[:, lo:lo + _LOG_BLOCK] = signed_log(x[:, lo:lo + _LOG_BLOCK])
            self._logs.update(zip(todo, x, strict=True))
        out = np.empty((len(names), self.rows), dtype=np.float64)
        for i, n in enumerate(names):
            out[i] = self._logs[n]
        return out

    @property
    def has_numeric(self) -> bool:
        return bool(self._numeric)

    def add_numeric(self, names: Sequence[str], block: np.ndarray) -> None:
        """Columns already converted as :meth:`numeric` converts them (a bundle's encoding, the same call):
        ``block`` is names x rows."""
        self._numeric.update(zip(names, block, strict=True))

    def codes(self, name: str) -> tuple[np.ndarray, list[str]]:
        """Column ``name``'s codes into its labels (:func:`_category_codes`)."""
        got = self._codes.get(name)
        if got is None:
            got = self._codes[name] = _category_codes(self.column(name), self.factorized(name))
        return got

    def factorized(self, name: str) -> tuple[np.ndarray, Any]:
        """``pd.factorize(column, use_na_sentinel=True)``, once per batch: the logistic terms, the encoding
        (:func:`training.encoding.category_codes`) and the reasons all read a string column's distinct values.

        A categorical column (batch scoring's, :func:`features.engine.take_coded`) is read from its codes,
        nothing hashed (:func:`_present_categories`): the same distinct values, in the dictionary's order
        instead of the batch's. Every reader maps each distinct value once and gathers by code, so the order
        does not change what it reads."""
        got = self._factorized.get(name)
        if got is None:
            col = self.column(name)
            if isinstance(col.dtype, pd.CategoricalDtype):
                codes, uniques = _present_categories(col.array)
            else:
                codes, uniques = pd.factorize(col, use_na_sentinel=True)
            if not isinstance(uniques, np.ndarray):  # an extension array (Arrow strings): its readers take
                # ``tolist()`` of it several times per batch, each a conversion; an object array holds the same
                uniques = np.array([*uniques.tolist(), None], dtype=object)[:-1]  # (None: never a 2-D array)
            got = self._factorized[name] = codes, uniques
        return got


def _present_categories(values: pd.Categorical) -> tuple[np.ndarray, np.ndarray]:
    """A categorical's codes (-1 missing) renumbered over the categories it holds, and those categories as an
    object array: ``pd.factorize`` of its values up to the order of the distinct values. Categories the
    batch does not hold are dropped, as factorising its values would: a reader may look at the distinct
    values themselves (a column with none is not text, :func:`training.score_columns.coded_column`)."""
    codes = values.codes.astype(np.intp)
    categories = np.asarray(values.categories, dtype=object)
    used = np.flatnonzero(np.bincount(codes + 1, minlength=len(categories) + 1)[1:])
    if len(used) == len(categories):
        return codes, categories
    remap = np.full(len(categories) + 1, -1, dtype=np.intp)  # the last entry: a missing value (-1) stays so
    remap[used] = np.arange(len(used))
    return remap[codes], categories[used]


@dataclass(frozen=True)
class NumericTerm:
    name: str
    fill: float
    center: float
    scale: float
    coef: float
    missing_coef: float | None  # None: the fit rows had no missing value (no indicator column)


@dataclass(frozen=True)
class CategoricalTerm:
    name: str
    coefs: dict[str, float]


@dataclass(frozen=True)
class LinearModel:
    """A fitted logistic regression over the feature schema (see the module docstring)."""

    intercept: float
    numeric: list[NumericTerm]
    categorical: list[CategoricalTerm]
    #: the mean of each feature's term on the fit rows, in schema order of ``features``
    term_means: dict[str, float]

    @property
    def features(self) -> list[str]:
        return [t.name for t in self.numeric] + [t.name for t in self.categorical]

    @property
    def offset(self) -> float:
        """Log-odds of a row whose every term is at its mean (what contributions are measured from)."""
        return self.intercept + float(sum(self.term_means.values()))

    def terms(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Each feature's additive log-odds term, one column per feature (logit = intercept + row sum)."""
        return pd.DataFrame(self.term_matrix(FrameColumns(frame)), columns=self.features, index=frame.index)

    def term_matrix(self, cols: FrameColumns) -> np.ndarray:
        """:meth:`terms` as a rows x terms array (model order), from a batch's columns converted once.

        The numeric terms are one compiled pass (:mod:`training.linear_terms`) over the signed logs the batch
        computes once for every model that reads it, element by element the arithmetic of one column at a
        time; the category terms one coefficient per distinct value, gathered by code.
        The array is Fortran-ordered, one contiguous column per term, like ``terms(frame).to_numpy()``,
        so its row sums add in the same order (the same bits).
        """
        out = np.empty((len(self.numeric) + len(self.categorical), cols.rows), dtype=np.float64)
        if self.numeric:
            from leadscore.training.linear_terms import numeric_terms  # numba: compiled when first used

            fill, center, scale, coef, miss_coef = self._numeric_arrays
            numeric_terms(cols.signed_logs([t.name for t in self.numeric]), signed_log(fill), center, scale, coef,
                          miss_coef, out)
        for i, c in enumerate(self.categorical, start=len(self.numeric)):
            codes, labels = cols.codes(c.name)
            out[i] = np.array([c.coefs.get(v, 0.0) for v in labels], dtype=np.float64)[codes]
        return out.T

    @cached_property
    def _numeric_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """fill, center, scale, coef, missing coef of the numeric terms as arrays (:meth:`row_terms`, :meth:`term_matrix`)."""
        t = self.numeric
        return (np.array([x.fill for x in t], dtype=np.float64), np.array([x.center for x in t], dtype=np.float64),
                np.array([x.scale for x in t], dtype=np.float64), np.array([x.coef for x in t], dtype=np.float64),
                np.array([x.missing_coef or 0.0 for x in t], dtype=np.float64))

    def row_terms(self, row: Mapping[str, Any]) -> np.ndarray:
        """:meth:`terms` for one row given as a mapping (the serving path: no DataFrame built).

        The numeric terms are one vectorised expression, the same arithmetic as :meth:`terms`
        element by element (one numpy call per feature cost ~2 µs each, ~250 µs a row).
        """
        fill, center, scale, coef, miss_coef = self._numeric_arrays
        x = np.array([np.nan if (v := row[t.name]) is None or v is pd.NA else float(v) for t in self.numeric],
                     dtype=np.float64)
        miss = np.isnan(x)
        out = np.empty(len(self.numeric) + len(self.categorical))
        out[: len(x)] = coef * (signed_log(np.where(miss, fill, x)) - center) / scale + miss_coef * miss
        for j, c in enumerate(self.categorical, start=len(self.numeric)):
            out[j] = c.coefs.get(_category_value(row[c.name]), 0.0)
        return out

    def logit(self, frame: pd.DataFrame) -> np.ndarray:
        return self.intercept + self.term_matrix(FrameColumns(frame)).sum(axis=1)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """P(label) on a frame holding the feature columns."""
        return self.predict_columns(FrameColumns(frame))

    def predict_columns(self, cols: FrameColumns) -> np.ndarray:
        """:meth:`predict` of a batch's converted columns (shared with the other target's model)."""
        return self.probability(self.term_matrix(cols))

    def probability(self, terms: np.ndarray) -> np.ndarray:
        """P(label) from a :meth:`term_matrix` (so a caller that also needs the terms computes them once)."""
        return np.asarray(1.0 / (1.0 + np.exp(-(self.intercept + terms.sum(axis=1)))))

    def contributions(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Exact linear SHAP values in log-odds (term minus its fit-row mean), one column per feature."""
        return pd.DataFrame(self.schema_contributions(self.term_matrix(FrameColumns(frame)), self.features),
                            columns=self.features, index=frame.index)

    def schema_contributions(self, terms: np.ndarray, names: Sequence[str]) -> np.ndarray:
        """:meth:`contributions` from a :meth:`term_matrix`, as a rows x ``names`` array (``names``: the
        model's features in the caller's order, e.g. the bundle schema)."""
        pos = {n: i for i, n in enumerate(self.features)}
        take = [pos[n] for n in names]
        means = np.array([self.term_means[n] for n in self.features], dtype=np.float64)[take]
        # row-major, as the trees' contributions it is blended with and summed per concept are
        out = np.empty((len(terms), len(take)), dtype=np.float64)
        np.subtract(terms[:, take], means, out=out)
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LinearModel:
        return cls(intercept=float(d["intercept"]), numeric=[NumericTerm(**t) for t in d["numeric"]],
                   categorical=[CategoricalTerm(t["name"], {str(k): float(v) for k, v in t["coefs"].items()})
                                for t in d["categorical"]],
                   term_means={str(k): float(v) for k, v in d["term_means"].items()})


def category_coefs(term: CategoricalTerm, dtype: pd.CategoricalDtype) -> np.ndarray:
    """For a categorical column of ``dtype``: ``term``'s coefficient per category code, then the missing
    value's (entry -1), so ``category_coefs(term, dtype)[codes]`` is the term of every row (each category
    worded as :func:`_category_value`, as the text column's). Worked out once per dictionary and term (batch
    scoring: every chunk's columns share the run's dictionaries), then kept."""
    return _COEFS.get(dtype, term, lambda: np.array(
        [term.coefs.get(_category_value(v), 0.0) for v in np.asarray(dtype.categories, dtype=object)]
        + [term.coefs.get(MISSING, 0.0)], dtype=np.float64))


#: per (categorical dtype, term): :func:`category_coefs`
_COEFS = DictionaryMemo()


def _category_value(v: Any) -> str:
    return MISSING if v is None or v is pd.NA or (isinstance(v, float) and v != v) else str(v)


def _category_codes(s: pd.Series, factorized: tuple[np.ndarray, Any] | None = None) -> tuple[np.ndarray, list[str]]:
    """Each row's position in ``labels`` (its :func:`_category_value`), computed once per distinct value:
    a per-row Python call cost seconds per feature on a few hundred thousand rows. ``factorized``: the
    column's ``pd.factorize`` already computed (the same distinct values, missing ones as -1)."""
    codes, uniques = factorized if factorized is not None else pd.factorize(s, use_na_sentinel=True)
    labels = [_category_value(v) for v in uniques] + [MISSING]
    return np.where(codes < 0, len(labels) - 1, codes), labels


def _category_values(s: pd.Series) -> np.ndarray:
    codes, labels = _category_codes(s)
    return np.asarray(labels, dtype=object)[codes]


def fit_linear(
    frame: pd.DataFrame,
    y: np.ndarray,
    schema: Sequence[Mapping[str, Any]],
    *,
    weights: np.ndarray | None = None,
    c: float = 1.0,
    min_frequency: int = 5,
    seed: int = 0,
) -> LinearModel:
    """Fit an L2 logistic regression (``C=c``) on the design of the module docstring, with optional row weights."""
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(y).astype(int)
    blocks: list[np.ndarray] = []
    layout: list[tuple[str, str, Any]] = []  # (feature, part, detail) per design column
    prep: dict[str, tuple[float, float, float, bool]] = {}
    cats: dict[str, list[str]] = {}
    for s in schema:
        name = s["name"]
        if s["dtype"] == "str":
            values = np.asarray(_category_values(frame[name]), dtype=object)
            kept, counts = np.unique(values, return_counts=True)
            cats[name] = [str(v) for v in kept[counts >= min_frequency]]
            for v in cats[name]:
                blocks.append((values == v).astype(np.float64))
                layout.append((name, "value", v))
            continue
        x = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64)
        miss = np.isnan(x)
        fill = float(np.nanmedian(x)) if (~miss).any() else 0.0
        z = signed_log(np.where(miss, fill, x))
        center, scale = float(z.mean()), float(z.std())
        scale = scale if scale > 0 else 1.0
        blocks.append((z - center) / scale)
        layout.append((name, "value", None))
        if miss.any():
            blocks.append(miss.astype(np.float64))
            layout.append((name, "missing", None))
        prep[name] = (fill, center, scale, bool(miss.any()))
    X = np.column_stack(blocks) if blocks else np.zeros((len(y), 0))
    # Newton-Cholesky: a few Newton steps on the (rows x design) matrix instead of hundreds of L-BFGS
    # gradient passes (~20x faster on 50k rows x a few hundred columns); same L2 objective and optimum
    lr = LogisticRegression(C=c, solver="newton-cholesky", max_iter=200, random_state=seed)
    lr.fit(X, y, sample_weight=weights)
    coef = dict.fromkeys([(f, p, str(d)) for f, p, d in layout], 0.0)
    for (f, p, d), b in zip(layout, lr.coef_[0], strict=True):
        coef[(f, p, str(d))] = float(b)
    numeric = [NumericTerm(n, fill, center, scale, coef[(n, "value", "None")],
                           coef[(n, "missing", "None")] if has_missing else None)
               for n, (fill, center, scale, has_missing) in prep.items()]
    categorical = [CategoricalTerm(n, {v: coef[(n, "value", v)] for v in values}) for n, values in cats.items()]
    model = LinearModel(float(lr.intercept_[0]), numeric, categorical, {})
    w = None if weights is None else np.asarray(weights, dtype=np.float64)
    means = {k: float(np.average(v, weights=w)) for k, v in model.terms(frame).items()}
    return LinearModel(model.intercept, numeric, categorical, means)


__all__ = ["CategoricalTerm", "FrameColumns", "LinearModel", "NumericTerm", "blend_probability", "fit_linear", "logit", "signed_log"]
