"""Path attribution of a LightGBM model: each feature's share of a row's log-odds for about one prediction.

Why not TreeSHAP: exact path-dependent TreeSHAP costs O(leaves x depth²) per tree and row, a prediction
O(depth); on the shipped models it is 27-50x a prediction, and the reasons and the fit/engagement band
are needed for every scored lead. The **path attribution** (Saabas; what ``treeinterpreter``
popularised) walks the row's own root-to-leaf path in each tree and credits every split's feature with
the change of the expected model output it causes: ``E[tree | child] - E[tree | node]``. The deltas
telescope, so per row ``bias + sum(contributions) == raw margin`` exactly (up to float rounding), and the
bias (sum of the trees' expected outputs over the training rows) is the one TreeSHAP reports. It differs
from SHAP only in how credit is split among interacting features (the feature split on nearer the root
takes the credit of an interaction); ``benchmarks/score.py`` and the tests measure the agreement of the
worded reasons and bands.

A node's expected output is the training-count-weighted mean of its leaves' values (``leaf_count``,
``internal_count`` of the model text: the distribution TreeSHAP's expected values use). A model is
compiled once (:func:`compile_booster`, from the LightGBM model text) into flat arrays over all trees: the
split feature, threshold, decision type (categorical flag, default-left flag, missing type), the categorical
bitsets, the children (a leaf as ``~leaf``) and per child the delta. The numba kernels route exactly as
LightGBM's ``Tree::NumericalDecision``/``CategoricalDecision`` (NaN → 0 unless the missing type is NaN,
``Zero`` missing within ±1e-35, a NaN or negative category always right), and add the leaf values in
tree order as ``GBDT::PredictRaw`` does, so the margin equals ``predict(raw_score=True)``; the tests hold
the leaf indices to ``predict(pred_leaf=True)``, NaN and unseen categories included.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np
from numba import njit, prange, uint64

#: bits of LightGBM's ``decision_type`` (``tree.h``)
_CATEGORICAL = 1
_DEFAULT_LEFT = 2
_MISSING_ZERO = 1
_MISSING_NAN = 2
_ZERO = 1e-35  # kZeroThreshold (a float in LightGBM; as a double the boundary is the same for our values)
_NO_LEAVES = np.empty(0, dtype=np.int32)
#: numba's ``workqueue`` threading layer (the fallback without OpenMP or TBB) aborts on concurrent parallel
#: kernels; each such call uses every core anyway, so concurrent batch callers take turns
_PARALLEL = threading.Lock()


@dataclass(frozen=True)
class PathModel:
    """One LightGBM model as flat arrays over all its trees (module docstring); immutable, thread-safe."""

    feature: np.ndarray  # int32 per internal node: split feature
    threshold: np.ndarray  # float64 per internal node (a categorical node: index into its bitsets)
    decision: np.ndarray  # uint8 per internal node: LightGBM's decision_type
    left: np.ndarray  # int32 per internal node: child node, or ~leaf (global leaf index)
    right: np.ndarray
    delta_left: np.ndarray  # float64 per internal node: E[left child] - E[node]
    delta_right: np.ndarray
    cat_start: np.ndarray  # int32 per categorical bitset: offset into ``cat_bits``
    cat_words: np.ndarray  # int32 per categorical bitset: its length in uint32 words
    cat_bits: np.ndarray  # uint32
    leaf_value: np.ndarray  # float64 per leaf
    roots: np.ndarray  # int32 per tree: its root node, or ~leaf for a one-leaf tree
    leaf_offset: np.ndarray  # int32 per tree: its first global leaf index
    bias: float  # sum over trees of E[tree] (TreeSHAP's expected value)
    n_features: int
    #: the model's probability is the logistic of its margin (``objective=binary sigmoid:1``)
    binary_logit: bool = False

    def _arrays(self) -> tuple[np.ndarray, ...]:
        return (self.feature, self.threshold, self.decision, self.left, self.right, self.delta_left,
                self.delta_right, self.cat_start, self.cat_words, self.cat_bits, self.leaf_value, self.roots)

    def margins(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(raw margin per row, contributions rows x features)`` of the rows ``x`` (float64, rows x features)."""
        x = np.ascontiguousarray(x, dtype=np.float64).reshape(-1, self.n_features)
        contrib = np.zeros((len(x), self.n_features))
        margin = np.empty(len(x))
        with _PARALLEL:
            _rows(x, contrib, margin, np.empty((0, 0), dtype=np.int32), *self._arrays())
        return margin, contrib

    def row(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """One row's raw margin and contributions (no bias): the serving path, no threads."""
        contrib = np.zeros(self.n_features)
        margin = _one(np.ascontiguousarray(x, dtype=np.float64).reshape(-1), contrib, _NO_LEAVES, *self._arrays())
        return float(margin), contrib

    def probabilities(self, margin: np.ndarray) -> np.ndarray:
        """``Booster.predict``'s probability from margins: the logistic, per element through the C library's
        ``exp`` as the one-row path (:func:`logistic`, ``math.exp``) computes it, compiled, so batch and
        service agree to the bit (not numpy's vectorised ``exp``, which may differ in the last bit)."""
        if not self.binary_logit:
            raise ValueError("the model's output is not the logistic of its margin")
        out = np.empty(len(margin))
        _logistic(np.ascontiguousarray(margin, dtype=np.float64), out)
        return out

    def leaves(self, x: np.ndarray) -> np.ndarray:
        """Per row and tree the leaf index within its tree (``Booster.predict(pred_leaf=True)``)."""
        x = np.ascontiguousarray(x, dtype=np.float64).reshape(-1, self.n_features)
        out = np.empty((len(x), len(self.roots)), dtype=np.int32)
        with _PARALLEL:
            _rows(x, np.zeros((len(x), self.n_features)), np.empty(len(x)), out, *self._arrays())
        return out - self.leaf_offset[None, :]


def logistic(margin: float) -> float:
    """LightGBM's binary sigmoid (scale 1) of one margin: ``1 / (1 + exp(-margin))`` in double."""
    return 1.0 / (1.0 + math.exp(-margin))


# --------------------------------------------------------------------------------------------------
# compiling a model
# --------------------------------------------------------------------------------------------------


def _trees(model_str: str) -> list[dict[str, str]]:
    """The ``Tree=`` blocks of a LightGBM model text as key → raw value."""
    trees: list[dict[str, str]] = []
    current: dict[str, str] | None = None
    for line in model_str.splitlines():
        if line.startswith("Tree="):
            current = {}
            trees.append(current)
        elif line.startswith("end of trees"):
            break
        elif current is not None and "=" in line:
            key, _, value = line.partition("=")
            current[key] = value
    return trees


def _floats(t: dict[str, str], key: str) -> np.ndarray:
    return np.array(t[key].split(), dtype=np.float64) if t.get(key) else np.empty(0)


def _ints(t: dict[str, str], key: str) -> np.ndarray:
    return np.array(t[key].split(), dtype=np.int64) if t.get(key) else np.empty(0, dtype=np.int64)


def compile_booster(model_str: str, n_features: int) -> PathModel:
    """Compile a binary LightGBM model text (one tree per iteration) into a :class:`PathModel`."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("feature", "threshold", "decision", "left", "right", "dl",
                                                           "dr", "leaf", "cat_start", "cat_words", "cat_bits")}
    roots, leaf_offsets = [], []
    bias = 0.0
    n_nodes = n_leaves = n_cats = n_bits = 0
    for t in _trees(model_str):
        if t.get("is_linear", "0") != "0":
            raise ValueError("path attribution does not support linear trees")
        leaf_value = _floats(t, "leaf_value")
        leaf_offsets.append(n_leaves)
        if int(t["num_leaves"]) == 1:
            roots.append(~n_leaves)
            bias += float(leaf_value[0])
            parts["leaf"].append(leaf_value)
            n_leaves += 1
            continue
        left, right = _ints(t, "left_child"), _ints(t, "right_child")
        leaf_count = _floats(t, "leaf_count")
        value = _expected(left, right, leaf_value, leaf_count, _floats(t, "internal_value"))
        bias += float(value[0])
        parts["dl"].append(_child_value(left, value, leaf_value) - value)
        parts["dr"].append(_child_value(right, value, leaf_value) - value)
        parts["left"].append(np.where(left >= 0, left + n_nodes, ~(~left + n_leaves)))
        parts["right"].append(np.where(right >= 0, right + n_nodes, ~(~right + n_leaves)))
        decision = _ints(t, "decision_type").astype(np.uint8)
        threshold = _floats(t, "threshold")
        threshold = np.where(decision & _CATEGORICAL, threshold + n_cats, threshold)  # global bitset index
        parts["feature"].append(_ints(t, "split_feature"))
        parts["threshold"].append(threshold)
        parts["decision"].append(decision)
        parts["leaf"].append(leaf_value)
        if int(t.get("num_cat", "0")) > 0:
            bounds = _ints(t, "cat_boundaries")
            parts["cat_start"].append(bounds[:-1] + n_bits)
            parts["cat_words"].append(np.diff(bounds))
            parts["cat_bits"].append(_ints(t, "cat_threshold"))
            n_cats += len(bounds) - 1
            n_bits += int(bounds[-1])
        roots.append(n_nodes)
        n_nodes += len(left)
        n_leaves += len(leaf_value)
    if not roots:
        raise ValueError("the model text holds no trees")

    def cat(key: str, dtype: type) -> np.ndarray:
        return np.ascontiguousarray(np.concatenate(parts[key]) if parts[key] else np.empty(0), dtype=dtype)

    return PathModel(
        feature=cat("feature", np.int32), threshold=cat("threshold", np.float64), decision=cat("decision", np.uint8),
        left=cat("left", np.int32), right=cat("right", np.int32), delta_left=cat("dl", np.float64),
        delta_right=cat("dr", np.float64), cat_start=cat("cat_start", np.int32), cat_words=cat("cat_words", np.int32),
        cat_bits=cat("cat_bits", np.uint32), leaf_value=cat("leaf", np.float64),
        roots=np.array(roots, dtype=np.int32), leaf_offset=np.array(leaf_offsets, dtype=np.int32), bias=bias,
        n_features=n_features, binary_logit="\nobjective=binary sigmoid:1\n" in model_str)


def _child_value(child: np.ndarray, value: np.ndarray, leaf_value: np.ndarray) -> np.ndarray:
    """The expected output of each child (a node's, or a leaf's value for ``~leaf``)."""
    return np.where(child >= 0, value[np.maximum(child, 0)], leaf_value[np.maximum(~child, 0)])


def _expected(left: np.ndarray, right: np.ndarray, leaf_value: np.ndarray, leaf_count: np.ndarray,
              internal_value: np.ndarray) -> np.ndarray:
    """Per internal node the count-weighted mean of its leaves' values (its expected output).

    LightGBM numbers a node's children after it, so one pass from the last node back sees both children
    first. A node no training row reached (counts 0) keeps LightGBM's own ``internal_value``.
    """
    n = len(left)
    value, count = np.empty(n), np.empty(n)
    for i in range(n - 1, -1, -1):
        s = w = 0.0
        for c in (int(left[i]), int(right[i])):
            cv, cc = (value[c], count[c]) if c >= 0 else (leaf_value[~c], leaf_count[~c])
            s += cv * cc
            w += cc
        value[i], count[i] = (s / w, w) if w > 0 else (internal_value[i], 0.0)
    return value


# --------------------------------------------------------------------------------------------------
# the kernels
# --------------------------------------------------------------------------------------------------


@njit(cache=True)
def _one(x: np.ndarray, contrib: np.ndarray, leaves: np.ndarray, feature: np.ndarray, threshold: np.ndarray,
         decision: np.ndarray, left: np.ndarray, right: np.ndarray, dl: np.ndarray, dr: np.ndarray,
         cat_start: np.ndarray, cat_words: np.ndarray, cat_bits: np.ndarray, leaf_value: np.ndarray,
         roots: np.ndarray) -> float:
    """One row: route it down every tree as LightGBM does, add each split's delta to its feature's
    contribution, record the leaves when ``leaves`` is not empty; return the margin (tree order).

    The routing is written out here rather than in a helper: numba's inlined helper ran 4x slower. The
    indices are unsigned: with signed ones numba tests each for a negative value (the walk ran 15% slower).
    """
    record = len(leaves) > 0
    margin = 0.0
    for t in range(len(roots)):
        node = roots[t]
        while node >= 0:
            at = uint64(node)  # unsigned indices: numba checks a signed one for a negative value on every read
            f = uint64(feature[at])
            v = x[f]
            d = decision[at]
            if d & _CATEGORICAL:  # NaN or negative: right; else the category's bit in the left set
                go = False
                if v == v and v >= 0.0:
                    iv = int(v)
                    k = uint64(threshold[at])
                    w = iv >> 5
                    if w < cat_words[k]:
                        go = ((cat_bits[uint64(cat_start[k] + w)] >> (iv & 31)) & 1) == 1
            else:
                missing = d >> 2
                if v != v:  # NaN: its default side if the missing type is NaN, else read as 0
                    if missing in (_MISSING_NAN, _MISSING_ZERO):
                        go = (d & _DEFAULT_LEFT) != 0
                    else:
                        go = threshold[at] >= 0.0
                elif missing == _MISSING_ZERO and -_ZERO <= v <= _ZERO:
                    go = (d & _DEFAULT_LEFT) != 0
                else:
                    go = v <= threshold[at]
            if go:
                contrib[f] += dl[at]
                node = left[at]
            else:
                contrib[f] += dr[at]
                node = right[at]
        margin += leaf_value[uint64(~node)]
        if record:
            leaves[t] = ~node
    return margin


@njit(cache=True)
def _logistic(margin: np.ndarray, out: np.ndarray) -> None:
    """:func:`logistic` of each margin (``math.exp`` compiles to the C library's ``exp``, as CPython calls it)."""
    for i in range(len(margin)):
        out[i] = 1.0 / (1.0 + math.exp(-margin[i]))


@njit(cache=True, parallel=True)
def _rows(x: np.ndarray, contrib: np.ndarray, margin: np.ndarray, leaves: np.ndarray, feature: np.ndarray,
          threshold: np.ndarray, decision: np.ndarray, left: np.ndarray, right: np.ndarray, dl: np.ndarray,
          dr: np.ndarray, cat_start: np.ndarray, cat_words: np.ndarray, cat_bits: np.ndarray, leaf_value: np.ndarray,
          roots: np.ndarray) -> None:
    """:func:`_one` over the rows, in parallel (``leaves``: rows x trees, or 0 x 0 not to record them)."""
    record = leaves.shape[0] > 0
    none = np.empty(0, dtype=np.int32)
    for i in prange(x.shape[0]):
        margin[i] = _one(x[i], contrib[i], leaves[i] if record else none, feature, threshold, decision, left, right,
                         dl, dr, cat_start, cat_words, cat_bits, leaf_value, roots)
