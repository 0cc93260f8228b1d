"""The path attribution (issues 12 and 14): routes rows exactly as LightGBM, adds up to the margin, and is
what both the service and batch scoring explain with (``reasons.attribution``, recorded in the bundle).

* on synthetic boosters that exercise every decision type (numeric with missing type None, Zero and NaN,
  default left and right; categorical bitsets over more than 32 categories): leaf indices equal
  ``predict(pred_leaf=True)``, the margin equals ``predict(raw_score=True)`` to the bit, bias +
  contributions equal it to float precision, the bias is TreeSHAP's, NaN / zero / unseen / negative
  categories included;
* on the session's trained bundle: the same on its real rows; the bundle records the configured
  attribution, its one-row path and batch scoring give identical reasons and bands; a bundle without the
  field (older) reads as TreeSHAP; the worded top reason agrees with TreeSHAP's for most leads.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from leadscore.training.attribution import PathModel, compile_booster
from leadscore.training.bundle import BUNDLE_FILE, BoundBundle, ScoringBundle
from tests.conftest import SmallModel


def _data(n: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.normal(size=n), rng.exponential(size=n), rng.integers(0, 3, n).astype(float),
                         rng.integers(0, 70, n).astype(float), rng.normal(size=n)])
    X[rng.random(n) < 0.15, 0] = np.nan  # NaN seen in training: missing type NaN
    X[rng.random(n) < 0.3, 1] = 0.0
    y = (np.nan_to_num(X[:, 0], nan=1.0) + (X[:, 3] % 7 < 3) + 0.5 * X[:, 2] + rng.normal(size=n) > 1.2)
    return X, y.astype(int)


def _probe(X: np.ndarray) -> np.ndarray:
    """Rows the model never saw: NaN everywhere (also where training had none), exact zeros, unseen and
    negative categories."""
    rng = np.random.default_rng(1)
    Z = X[:600].copy()
    Z[rng.random(Z.shape) < 0.15] = np.nan
    Z[rng.random(Z.shape) < 0.1] = 0.0
    Z[:50, 3] = 500.0  # unseen category (beyond the bitset)
    Z[50:60, 3] = -1.0
    Z[60:70, 3] = 69.0
    return Z


@pytest.mark.parametrize("params", [
    {},
    {"zero_as_missing": True},  # missing type Zero
    {"use_missing": False},  # missing type None: NaN reads as 0
    {"max_cat_to_onehot": 64, "num_leaves": 7},  # one-vs-rest categorical splits
], ids=["nan", "zero", "none", "onehot"])
def test_routes_and_margins_equal_lightgbm(params: dict[str, object]) -> None:
    import lightgbm as lgb

    X, y = _data()
    booster = lgb.train({"objective": "binary", "verbosity": -1, "num_threads": 1, "seed": 0, "num_leaves": 15,
                         "min_data_per_group": 5, "cat_smooth": 1.0, **params},
                        lgb.Dataset(X, y, categorical_feature=[3]), 60)
    model = compile_booster(booster.model_to_string(), X.shape[1])
    for Z in (X[:600], _probe(X)):
        np.testing.assert_array_equal(model.leaves(Z), booster.predict(Z, pred_leaf=True))
        margin, contrib = model.margins(Z)
        raw = booster.predict(Z, raw_score=True)
        np.testing.assert_array_equal(margin, raw)
        np.testing.assert_allclose(model.bias + contrib.sum(axis=1), raw, rtol=0, atol=1e-10)
        assert model.bias == pytest.approx(np.asarray(booster.predict(Z[:1], pred_contrib=True))[0, -1], abs=1e-12)
        np.testing.assert_array_equal(model.probabilities(margin), booster.predict(Z))
        one_margin, one_contrib = model.row(Z[7])
        assert one_margin == margin[7]
        np.testing.assert_array_equal(one_contrib, contrib[7])
    decisions = set(np.unique(model.decision).tolist())
    assert any(d & 1 for d in decisions)  # a categorical split was exercised
    _batch_pass_equals_the_walk(model, _probe(X))


def _batch_pass_equals_the_walk(model: PathModel, Z: np.ndarray) -> None:
    """Batch scoring's pass (:func:`training.batch_pass.run_pass`) over a column-major chunk: the margin and
    contributions of :meth:`PathModel.margins` to the bit for the explained target; the margin alone for a
    second target packed after it (node, leaf and bitset indices moved) that reads its columns from other
    rows of the chunk (its own category codes). The chunk's row-major copy the pass hands out for the
    reasons is the chunk transposed, every bit (NaN included)."""
    from leadscore.training.batch_pass import pass_plan, run_pass

    class Trees:  # what pass_plan reads of a tree model
        kind, linear, uses_trees = "lightgbm", None, True

    margin, contrib = model.margins(Z)
    n = Z.shape[1]
    values = np.concatenate([Z.T, np.full((2, len(Z)), np.nan), Z.T[::-1]])  # column j again at row n + 2 + (n - 1 - j)
    reads = {"sql": np.arange(n), "opportunity": n + 2 + (n - 1 - np.arange(n))}
    plan = pass_plan(["sql", "opportunity"], {"sql": Trees(), "opportunity": Trees()},  # type: ignore[dict-item]
                     {"sql": model, "opportunity": model}, reads, {str(j): j for j in range(n)}, explain=True)
    got = np.full(Z.shape, 7.0)  # the pass overwrites the rows it explains
    row_major = np.full((len(Z), len(values)), 7.0)
    got_margin, _, _ = run_pass(plan, values, np.empty((0, len(Z))), np.empty((0, len(Z))), got, row_major)
    np.testing.assert_array_equal(got_margin[0], margin)
    np.testing.assert_array_equal(got_margin[1], margin)
    np.testing.assert_array_equal(got, contrib)
    np.testing.assert_array_equal(row_major.view(np.int64), values.T.view(np.int64))
    again = np.full(Z.shape, 7.0)  # without the copy: the same answers
    again_margin, _, _ = run_pass(plan, values, np.empty((0, len(Z))), np.empty((0, len(Z))), again)
    np.testing.assert_array_equal(again_margin, got_margin)
    np.testing.assert_array_equal(again, contrib)


def test_batch_probabilities_are_the_one_row_logistic_bit_for_bit() -> None:
    """The compiled logistic of the batch path calls the C library's ``exp`` as ``math.exp`` does: the same
    bits as the one-row :func:`logistic` (numpy's vectorised ``exp`` may differ in the last bit)."""
    from leadscore.training.attribution import PathModel, logistic

    rng = np.random.default_rng(5)
    margin = np.concatenate([rng.normal(0.0, 3.0, 200_000), rng.uniform(-40.0, 40.0, 50_000),
                             [0.0, -0.0, 700.0, -700.0, 1e-300, np.nan]])
    empty = np.empty(0)
    model = PathModel(*[empty] * 13, bias=0.0, n_features=0, binary_logit=True)  # type: ignore[arg-type]
    got = model.probabilities(margin)
    want = np.array([logistic(m) for m in margin.tolist()])
    np.testing.assert_array_equal(got.view(np.int64), want.view(np.int64))


def test_a_one_leaf_tree_adds_to_the_bias_only() -> None:
    import lightgbm as lgb

    X = np.zeros((100, 2))
    booster = lgb.train({"objective": "binary", "verbosity": -1, "num_threads": 1}, lgb.Dataset(X, np.r_[np.ones(30),
                        np.zeros(70)]), 3)
    model = compile_booster(booster.model_to_string(), 2)
    margin, contrib = model.margins(X[:5])
    np.testing.assert_array_equal(margin, booster.predict(X[:5], raw_score=True))
    assert not contrib.any() and model.bias == pytest.approx(margin[0], abs=1e-12)


def _rows(small: SmallModel) -> tuple[BoundBundle, pd.DataFrame]:
    from leadscore.features.engine import compute_features, prepare
    from leadscore.history import load_history
    from leadscore.training.batch_score import candidate_leads

    bundle = ScoringBundle.load(small.bundle_dir).bind(small.settings)
    history, _ = load_history(small.crm_dir, small.settings, write_rejected=False)
    ids, _ = candidate_leads(history, pd.Timestamp(history.cutoff))
    moments = pd.DataFrame({"lead_id": ids, "as_of": pd.Series([pd.Timestamp(history.cutoff)] * len(ids),
                                                                  dtype="datetime64[us, UTC]")})
    return bundle, compute_features(history, moments, small.settings, prep=prepare(history, small.settings))


def test_the_trained_bundle_attributes_by_path_identically_online_and_in_batch(small_model: SmallModel) -> None:
    from leadscore.serving.scoring import Scorer
    from leadscore.training.batch_score import score_frame

    bundle, feats = _rows(small_model)
    assert bundle.attribution == small_model.settings.reasons.attribution == "path"
    model = bundle.models["sql"]
    x = bundle.encode(feats, "sql")
    cat = [j for j, s in enumerate(bundle.schema) if s["dtype"] == "str"]
    x[::3, cat] = 10_000.0  # categories the model never saw
    x[1::5] = np.where(np.random.default_rng(0).random(x[1::5].shape) < 0.3, np.nan, x[1::5])
    paths = model.path_model(x.shape[1])
    np.testing.assert_array_equal(paths.leaves(x), model.booster.predict(x, pred_leaf=True))
    margin, contrib = paths.margins(x)
    raw = model.booster.predict(x, raw_score=True)
    np.testing.assert_array_equal(margin, raw)
    np.testing.assert_allclose(paths.bias + contrib.sum(axis=1), raw, rtol=0, atol=1e-10)

    scorer = Scorer.load(small_model.settings, bundle_dir=small_model.bundle_dir)
    frame = score_frame(scorer, feats)
    for i, row in enumerate(feats[bundle.feature_names].to_dict("records")):
        probs, reasons, band = scorer.bundle.score_row(row, k=3)
        assert json.loads(frame["reasons_positive"][i]) == reasons["positive"]
        assert json.loads(frame["reasons_negative"][i]) == reasons["negative"]
        assert frame["band"][i] == band
        assert probs["p_sql"] == pytest.approx(frame["p_sql"][i], abs=1e-12)


def test_predict_explained_is_predict_and_contributions(small_model: SmallModel) -> None:
    """:meth:`BoundBundle.predict_explained` (one encoding, one pass) answers :meth:`predict` and the schema
    columns of :meth:`contributions` for the explained target, on the frame's own index."""
    bundle, feats = _rows(small_model)
    feats = feats.set_axis(np.arange(len(feats)) * 7 + 3)
    probs, contrib = bundle.predict_explained(feats, "sql")
    want = bundle.predict(feats)
    assert list(probs.index) == list(feats.index)
    for column in want.columns:
        np.testing.assert_allclose(probs[column].to_numpy(), want[column].to_numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(contrib, bundle.contributions(feats, "sql").to_numpy()[:, : len(bundle.schema)],
                               rtol=0, atol=1e-10)


def test_shap_bundles_keep_treeshap_and_older_bundles_read_as_shap(small_model: SmallModel, tmp_path: Path) -> None:
    bundle, feats = _rows(small_model)
    doc = json.loads((small_model.bundle_dir / BUNDLE_FILE).read_text())
    assert doc["attribution"] == "path"
    old = tmp_path / "old"
    ScoringBundle.load(small_model.bundle_dir).save(old)
    doc.pop("attribution")
    (old / BUNDLE_FILE).write_text(json.dumps(doc))
    shap = ScoringBundle.load(old).bind(small_model.settings)
    assert shap.attribution == "shap"
    rows = feats.head(30)
    x = shap.encode(rows, "sql")
    np.testing.assert_array_equal(shap.tree_contributions(x, "sql"),
                                  shap.models["sql"].booster.predict(x, pred_contrib=True))
    for r in rows[shap.feature_names].to_dict("records"):
        probs = shap.score_row(r)[0]
        assert probs == shap.predict_row(r)
        # the path walk's margin is LightGBM's: both bundles give the same probabilities
        assert bundle.score_row(r)[0] == pytest.approx(probs, abs=1e-12)


def test_path_reasons_and_bands_mostly_agree_with_treeshap(small_model: SmallModel) -> None:
    """The decomposition differs from SHAP only in how interactions are split: the strongest worded reason
    and the band (cut points fitted on each attribution) agree for most leads."""
    from leadscore.training.bands import band_labels, fit_band_cuts
    from leadscore.training.reasons import top_reasons

    bundle, feats = _rows(small_model)
    shap = replace(bundle, attribution="shap", _reasons={})
    n = len(bundle.schema)
    path_c = bundle.contributions(feats, "sql").to_numpy()[:, :n]
    shap_c = shap.contributions(feats, "sql").to_numpy()[:, :n]
    np.testing.assert_allclose(path_c.sum(axis=1), shap_c.sum(axis=1), atol=1e-9)  # both split the same margin
    plan = bundle._reason_plan()
    rows = feats[bundle.feature_names].to_dict("records")

    def top(r: dict[str, object], c: np.ndarray) -> list[str]:
        return [t["text"] for t in top_reasons(plan, r, c, 3)["positive"][:1]]

    same = sum(top(r, path_c[i]) == top(r, shap_c[i]) for i, r in enumerate(rows))
    schema = bundle.schema
    bands = np.array(band_labels(path_c, schema, fit_band_cuts(path_c, schema))) == \
        np.array(band_labels(shap_c, schema, fit_band_cuts(shap_c, schema)))
    assert same / len(rows) >= 0.6 and bands.mean() >= 0.6
