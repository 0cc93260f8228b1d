"""Batch scoring's array forms equal the one-row rules they replace, row by row.

``score_frame`` words the reasons of a chunk at once (:func:`training.reason_batch.batch_top_ids`), encodes
their JSON once per distinct list (:func:`training.reasons.json_lists`), applies the stage policy as
array comparisons (:func:`training.batch_stages.policy_stages`) and computes the logistic terms as one
array expression (:meth:`training.linear.LinearModel.term_matrix`). Each is checked here against the
definition it must equal (``top_reasons``, ``json.dumps``, ``StagePolicy.stage``, the per-column terms and
``row_terms``) on rows built to reach every branch: ties, zero sums, silent zeros, shared sentences,
unknown categories, every previous stage, days around the recycling limit.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from leadscore.config import Settings
from leadscore.features.schema import feature_schema
from leadscore.training.batch_stages import policy_stages
from leadscore.training.bundle import schema_dicts
from leadscore.training.linear import CategoricalTerm, FrameColumns, LinearModel, NumericTerm, signed_log
from leadscore.training.reason_batch import batch_top_ids, json_lists
from leadscore.training.reasons import reason_plan, top_reasons
from leadscore.training.stage_policy import StagePolicy
from tests.test_reasons import SCHEMA

STAGES = [None, "lead", "subscriber", "recycled", "mql", "sql", "opportunity", "customer", "disqualified"]


def _rows(schema: list[dict], n: int, seed: int) -> pd.DataFrame:
    """Values that repeat (small counts, zeros, NaN) and a few that do not; categories incl. unknown/None."""
    rng = np.random.default_rng(seed)
    cols: dict[str, object] = {}
    for s in schema:
        if s["dtype"] == "str":
            cols[s["name"]] = rng.choice(np.array(["true", "false", "paid_search", "c_level", None], dtype=object), n)
        else:
            v = rng.choice([0.0, 0.0, 1.0, 2.0, 3.5, np.nan, 12.0, 0.25], n)
            wild = rng.random(n) < 0.1
            v[wild] = rng.exponential(100.0, wild.sum())
            cols[s["name"]] = v
    return pd.DataFrame(cols)


def _contrib(n: int, m: int, seed: int) -> np.ndarray:
    """Contributions with exact ties, exact zeros and opposite signs that cancel when concepts merge."""
    rng = np.random.default_rng(seed)
    c = rng.choice([0.0, 0.5, -0.5, 0.25, -0.25, 1.0], (n, m)) * (rng.random((n, m)) < 0.6)
    noisy = rng.random((n, m)) < 0.5
    c[noisy] = rng.normal(0.0, 1.0, noisy.sum())
    c[:5] = 0.0  # rows with nothing to say
    return c


@pytest.mark.parametrize(("k", "window"), [(1, None), (3, None), (3, 1)])
def test_batch_reasons_equal_top_reasons_row_by_row(settings: Settings, k: int, window: int | None) -> None:
    """``window=1``: every row's walk goes past the concepts worded first, so the second pass words the rest."""
    for schema, seed in ((SCHEMA, 1), (schema_dicts(feature_schema(settings)), 2)):
        frame = _rows(schema, 600, seed)
        contrib = _contrib(len(frame), len(schema), seed)
        plan = reason_plan(schema)
        pos, neg, texts = batch_top_ids(plan, frame, contrib, k, window)
        rows = frame.to_dict("records")
        merged = 0
        for i, row in enumerate(rows):
            want = top_reasons(plan, row, contrib[i], k)
            got_pos = [texts[t] for t in pos[i] if t >= 0]
            got_neg = [texts[t] for t in neg[i] if t >= 0]
            assert got_pos == [r["text"] for r in want["positive"]], i
            assert got_neg == [r["text"] for r in want["negative"]], i
            merged += any(r["text"] == "No company known" for r in want["negative"] + want["positive"])
        assert (pos >= 0).sum() > len(frame) * k // 2 and (neg >= 0).sum() > len(frame) * k // 2
        # a second batch with the same plan: its sentences memorised from the first are still right
        again = _rows(schema, 300, seed + 10)
        contrib2 = _contrib(len(again), len(schema), seed + 10)
        pos2, neg2, texts2 = batch_top_ids(plan, again, contrib2, k, window)
        assert plan.memo
        for i, row in enumerate(again.to_dict("records")):
            want = top_reasons(plan, row, contrib2[i], k)
            assert [texts2[t] for t in pos2[i] if t >= 0] == [r["text"] for r in want["positive"]], i
            assert [texts2[t] for t in neg2[i] if t >= 0] == [r["text"] for r in want["negative"]], i
        if schema is SCHEMA:
            assert merged > 0  # the shared sentence's merge was exercised
            # and buying signals were left out of the reasons against (the rule of the one-row path)
            plain = reason_plan([{**s, "only_for": False} for s in schema])
            kept = sum(any("demo request" in r["text"] for r in top_reasons(plain, row, contrib[i], k)["negative"])
                       for i, row in enumerate(rows))
            assert kept > 20 and not any("demo request" in texts[t] for t in neg.ravel() if t >= 0)


def test_json_lists_are_json_dumps() -> None:
    texts = ['He said "hi"', "Ünïcode", "plain", "a, b"]
    ids = np.array([[0, 1, -1], [2, -1, -1], [-1, -1, -1], [0, 1, -1], [3, 2, 1], [-1, 2, -1], [-1, -1, 3]])
    assert json_lists(ids, texts).tolist() == [json.dumps([texts[t] for t in r if t >= 0]) for r in ids]
    assert json_lists(np.empty((0, 3), dtype=np.int64), texts).tolist() == []
    many = [f"reason {i}" for i in range(3000)]  # too many sentences for one integer per row of 6
    wide = np.random.default_rng(0).integers(-1, 3000, (50, 6))
    assert json_lists(wide, many).tolist() == [json.dumps([many[t] for t in r if t >= 0]) for r in wide]
    odd = ["back\\slash", "line\nbreak\ttab", "", "emoji \U0001f642", "\x00 nul", "</script>"]  # escaped as json.dumps does
    pairs = np.array([[i, j] for i in range(len(odd)) for j in (-1, *range(len(odd)))])
    assert json_lists(pairs, odd).tolist() == [json.dumps([odd[t] for t in r if t >= 0]) for r in pairs]
    with pytest.raises(IndexError, match="sentence id 6"):
        json_lists(np.array([[6]]), odd)


@pytest.mark.parametrize("recycle", [45, None])
def test_policy_stages_equal_the_one_row_policy(recycle: int | None) -> None:
    policy = StagePolicy(mql_threshold=0.2, sql_threshold=0.4, hysteresis=0.1, rule_mql_threshold=50.0,
                         recycle_after_days=recycle)
    rng = np.random.default_rng(0)
    n = 5000
    bars = [0.2, 0.4, 0.2 * 0.9, 0.4 * 0.9, 0.2 * 1.1, 0.4 * 1.1]  # every bar exactly, and its neighbours
    near = np.array(bars + [np.nextafter(b, 0) for b in bars] + [np.nextafter(b, 1) for b in bars])
    p_sql = np.where(rng.random(n) < 0.5, rng.choice(near, n), rng.random(n) * 0.6)
    p_opp = np.where(rng.random(n) < 0.5, rng.choice(near, n), rng.random(n) * 0.6)
    prev = np.array(STAGES, dtype=object)[rng.integers(0, len(STAGES), n)]
    days = rng.choice([np.nan, 0.0, 44.9, 45.0, 90.0], n)
    want = [policy.stage(float(a), float(b), p, days_in_stage=None if np.isnan(d) else float(d))
            for a, b, p, d in zip(p_sql, p_opp, prev, days, strict=True)]
    assert policy_stages(policy, p_sql, p_opp, prev, days).tolist() == want
    assert set(want) >= {"lead", "mql", "sql", "subscriber", "opportunity"} | ({"recycled"} if recycle else set())
    without = [policy.stage(float(a), float(b), p) for a, b, p in zip(p_sql, p_opp, prev, strict=True)]
    assert policy_stages(policy, p_sql, p_opp, prev, None).tolist() == without


def _old_terms(model: LinearModel, frame: pd.DataFrame) -> np.ndarray:
    """The per-column terms as they were computed before :meth:`LinearModel.term_matrix` (the reference)."""
    out = {}
    for t in model.numeric:
        x = pd.to_numeric(frame[t.name], errors="coerce").to_numpy(dtype=np.float64)
        miss = np.isnan(x)
        z = (signed_log(np.where(miss, t.fill, x)) - t.center) / t.scale
        out[t.name] = t.coef * z + (t.missing_coef or 0.0) * miss
    for c in model.categorical:
        vals = ["(missing)" if v is None or (isinstance(v, float) and v != v) else str(v) for v in frame[c.name]]
        out[c.name] = np.array([c.coefs.get(v, 0.0) for v in vals], dtype=np.float64)
    return pd.DataFrame(out).to_numpy()


def test_term_matrix_equals_the_per_column_terms_and_the_row_terms() -> None:
    rng = np.random.default_rng(3)
    frame = _rows(SCHEMA, 400, 3).assign(n_unsub=lambda f: f["n_unsub"].astype(object))
    frame.loc[::7, "n_unsub"] = "not a number"  # coerced to missing, as pd.to_numeric(errors="coerce")
    numeric = [NumericTerm(s["name"], float(rng.random()), float(rng.normal()), float(rng.random() + 0.5),
                           float(rng.normal()), None if j % 2 else float(rng.normal()))
               for j, s in enumerate(SCHEMA) if s["dtype"] != "str"]
    cat = [CategoricalTerm("icp", {"true": 0.7, "false": -0.2, "(missing)": 0.1})]
    model = LinearModel(-1.5, numeric, cat, {n: float(i) / 10 for i, n in enumerate([t.name for t in numeric] + ["icp"])})
    old = _old_terms(model, frame)
    new = model.term_matrix(FrameColumns(frame))
    np.testing.assert_array_equal(new, old)  # the same bits
    np.testing.assert_array_equal(model.logit(frame), model.intercept + old.sum(axis=1))
    for i, row in enumerate(frame.to_dict("records")):
        row = {k: (np.nan if v == "not a number" else v) for k, v in row.items()}
        np.testing.assert_allclose(model.row_terms(row), new[i], rtol=0, atol=1e-12)
    contrib = model.contributions(frame)
    np.testing.assert_array_equal(contrib.to_numpy(), old - np.array([model.term_means[n] for n in model.features]))


def test_category_codes_equal_the_categorical_of_the_text() -> None:
    """Unknown, missing (None, NaN, pd.NA), non-string and string/category dtypes: the encoding's codes."""
    import warnings

    from leadscore.training.encoding import category_codes

    cats = ["paid_search", "true", "1", "1.5", "None", "nan"]
    values = ["true", None, np.nan, "paid_search", 1, 1.5, "x", pd.NA, "true", "nan", "None"]
    cols = [pd.Series(values * 5, dtype=object), pd.Series(["true", None, "x", "1"] * 5, dtype="string"),
            pd.Series(["true", None, "x"] * 5, dtype="category"), pd.Series([1.0, np.nan, 1.5] * 5),
            pd.Series(["true", "x"] * 5, index=np.arange(10, 0, -1))]
    for col in cols:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pandas deprecates unknown values in a Categorical
            want = pd.Categorical(col.astype("str"), categories=cats).codes
        np.testing.assert_array_equal(category_codes(col, cats), want)


@pytest.mark.parametrize("unit", ["count", "weight", "flag", "", "days", "money", "number", "ratio"])
def test_values_with_one_display_key_read_alike(unit: str) -> None:
    """Batch wording groups a column's floats by what the reason shows (:func:`display_keys`) and words one per
    group: every value of a group must word the same sentence, at rounding halves, signs, 0, 1, magnitudes."""
    from leadscore.training.reason_keys import display_keys, unit_codes

    plan = reason_plan([{"name": "x", "dtype": "float64", "template": "[one x|{value} x]", "unit": unit}])
    rng = np.random.default_rng(7)
    halves = np.concatenate([np.arange(-2100, 2100) / 200.0, np.arange(-2100, 2100) / 20.0,
                             np.array([0.5, 1.5, 2.5, 999.5, 1e3 - 0.5, 1e6 - 500, 9.995e6, 99.95e6, 999.5e6])])
    values = np.concatenate([
        halves, np.nextafter(halves, np.inf), np.nextafter(halves, -np.inf),
        [0.0, -0.0, 1.0, -1.0, np.nextafter(1.0, 2.0), np.nextafter(1.0, 0.0), 1.999, 2.0, 9.995, 9.9949999,
         10.0, 10.04, 1e3, 1e6, 1e9, 1e12, 1.2345e12, -1e13, np.inf, -np.inf, np.nan],
        rng.exponential(3.0, 3000), rng.exponential(1e6, 3000), -rng.exponential(50.0, 500),
        np.round(rng.exponential(3.0, 3000), 2), rng.integers(0, 5000, 1000).astype(np.float64)])
    if unit == "days":
        values = values[~np.isinf(values)]  # not a number of days (the one-value rule cannot word it)
    key, exact = display_keys(unit_codes([unit] * len(values)), values)
    texts = [plan.text(0, v) for v in values.tolist()]
    by_key: dict[int, str | None] = {}
    for kk, t in zip(key[~exact].tolist(), np.array(texts, dtype=object)[~exact].tolist(), strict=True):
        assert by_key.setdefault(kk, t) == t, (unit, kk, t, by_key[kk])
    # the values at halves are worded one by one; the others are keyed, and keys group them
    # (a ratio shows 1 decimal: the values rounded to 2 are often at its halves)
    assert exact[-10_500:].mean() < (0.05 if unit != "ratio" else 0.1) and len(by_key) < (~exact).sum() / 2


def test_concept_sums_are_the_one_row_bincount_and_stable_order() -> None:
    """The compiled sums add in column order as ``np.bincount`` does for one row (the same bits), and the
    order is ``argsort(-|sum|, stable)``: exact ties, zeros and NaN (numpy's order) included, from NaN
    contributions or +inf and -inf in one concept."""
    from leadscore.training.reason_select import concept_rows

    plan = reason_plan(SCHEMA)
    contrib = _contrib(400, len(SCHEMA), 4)
    inf = contrib.copy()
    pair = next(m for m in plan.members if len(m) >= 2)
    inf[::3, pair[0]], inf[::3, pair[1]] = np.inf, -np.inf  # a NaN sum of numbers
    for c in (contrib, np.where(np.arange(len(SCHEMA)) == 3, np.nan, contrib), inf):
        sums, order = np.empty((len(c), len(plan.concepts))), np.empty((len(c), len(plan.concepts)), dtype=np.int64)
        concept_rows(np.arange(len(c)), 0, len(c), c, plan.concept_of, sums, order)
        for i in range(len(c)):
            want = np.bincount(plan.concept_of, weights=c[i], minlength=len(plan.concepts))
            np.testing.assert_array_equal(sums[i], want)
            np.testing.assert_array_equal(order[i], np.argsort(-np.abs(want), kind="stable"))


def test_a_walked_batch_with_nan_concept_sums_is_the_one_row_rule() -> None:
    """A NaN contribution, or +inf and -inf in one concept (a NaN sum of numbers), walked as the scoring pass
    walks each row (the compiled order, then the walk's finish): the one-row rule's sentences, row by row."""
    from leadscore.training.reason_batch import BatchWalk

    plan = reason_plan(SCHEMA)
    frame = _rows(SCHEMA, 120, 7)
    floats = np.array([c.numeric for c in plan.columns], dtype=bool)
    block = np.zeros((len(frame), len(plan.columns)))
    block[:, floats] = frame[[c.name for c, f in zip(plan.columns, floats, strict=True) if f]].to_numpy(np.float64)
    pair = next(m for m in plan.members if len(m) >= 2)
    nan, inf = _contrib(len(frame), len(SCHEMA), 8), _contrib(len(frame), len(SCHEMA), 9)
    nan[::3, 3] = np.nan
    inf[::4, pair[0]], inf[::4, pair[1]] = np.inf, -np.inf
    for c in (nan, inf):
        with BatchWalk.open(plan, frame, 3, None, floats) as walk:
            walk.compiled(block)  # as the pass is given the walk: every row walked with the compiled order
            walk.walk(np.arange(len(frame)), c, False, block)
            pos, neg, texts, _ = walk.finish(c, block)
        assert np.isnan(walk.sums).any()
        for i, row in enumerate(frame.to_dict("records")):
            want = top_reasons(plan, row, c[i], 3)
            assert [texts[t] for t in pos[i] if t >= 0] == [r["text"] for r in want["positive"]], i
            assert [texts[t] for t in neg[i] if t >= 0] == [r["text"] for r in want["negative"]], i


def test_the_logistic_pass_equals_the_term_matrix_contributions_and_blend() -> None:
    """The batch's logistic pass (:func:`training.batch_pass.run_pass` of a logistic model, no term matrix)
    over the column-major chunk gives the term matrix's row sums and, per mode, the linear contributions or
    their blend with the trees' exactly (the same bits), NaN, both zeros, infinities and category terms
    included; a second target's terms read the same chunk and leave the contributions alone."""
    from dataclasses import replace

    from leadscore.training.batch_pass import pass_plan, run_pass
    from leadscore.training.bundle import TargetModel
    from leadscore.training.calibration import Calibrator
    from leadscore.training.encoding import encode_columns
    from leadscore.training.linear_terms import BLEND, LINEAR, NO_CONTRIB

    rng = np.random.default_rng(5)
    frame = _rows(SCHEMA, 700, 5)
    num_names = [s["name"] for s in SCHEMA if s["dtype"] != "str"]
    frame.loc[:40, num_names[0]] = -0.0
    frame.loc[41:60, num_names[0]] = -np.inf
    frame.loc[61:80, num_names[-1]] = -rng.exponential(5.0, 20)
    names = [s["name"] for s in SCHEMA]
    numeric = [NumericTerm(s["name"], float(rng.random()), float(rng.normal()), float(rng.random() + 0.5),
                           float(rng.normal()), None if j % 3 else float(rng.normal()))
               for j, s in enumerate(SCHEMA) if s["dtype"] != "str"][::-1]  # model order differs from the schema's
    model = LinearModel(0.3, numeric, [CategoricalTerm("icp", {"true": 0.7, "(missing)": 0.1})],
                        {n: float(i) / 7 for i, n in enumerate([t.name for t in numeric] + ["icp"])})
    other = LinearModel(-0.2, numeric[::2], [], {})
    cols = FrameColumns(frame)
    terms = model.term_matrix(cols)
    linear = model.schema_contributions(terms, [n for n in names if n in model.features])
    want_linear = np.zeros((len(frame), len(names)))
    want_linear[:, [names.index(n) for n in names if n in model.features]] = linear
    values, slots = encode_columns(frame, SCHEMA, [{}, {}], cols.factorized)
    abs_logs = np.log1p(np.abs(values[: len(names)]))
    cal = Calibrator("isotonic", np.array([0.0, 1.0]), np.array([0.0, 1.0]))
    models = {"sql": TargetModel(None, {}, cal, kind="logistic", linear=model),
              "opportunity": TargetModel(None, {}, cal, kind="logistic", linear=other)}
    plan = pass_plan(["sql", "opportunity"], models, {}, dict(zip(models, slots, strict=True)),
                     {n: j for j, n in enumerate(names)}, explain=True)
    cat = np.array([model.categorical[0].coefs.get(v, 0.0) for v in cols.codes("icp")[1]])[cols.codes("icp")[0]]
    trees = rng.normal(size=(len(frame), len(names)))
    for mode, w in ((NO_CONTRIB, 1.0), (LINEAR, 1.0), (BLEND, 0.6)):
        contrib = trees.copy()
        _, sums, _ = run_pass(replace(plan, mode=np.array([mode, NO_CONTRIB]), weights=np.array([[w, 1.0 - w], [1.0, 0.0]])),
                           values, abs_logs, cat[None, :], contrib)
        np.testing.assert_array_equal(sums[0], np.asarray(terms).sum(axis=1))
        np.testing.assert_array_equal(sums[1], np.asarray(other.term_matrix(cols)).sum(axis=1))
        with np.errstate(invalid="ignore"):  # an infinite term less its mean
            want = {NO_CONTRIB: trees, LINEAR: want_linear, BLEND: w * trees + (1.0 - w) * want_linear}[mode]
        np.testing.assert_array_equal(contrib, want)


def test_encode_columns_equals_each_tables_encoding() -> None:
    """The column-major chunk of several targets' tables: each table's rows, transposed, are its encoding
    (numeric columns converted once, category codes per table; an identical table adds no rows). Numeric
    columns pandas holds as numpy numbers are copied as they are (float, int, bool), the others (nullable
    integers with a missing value, numbers as objects) converted: the same values either way."""
    from leadscore.training.encoding import encode_columns, encode_frame

    frame = _rows(SCHEMA, 300, 9)
    num = [s["name"] for s in SCHEMA if s["dtype"] != "str"]
    assert len(num) >= 4
    frame[num[0]] = np.arange(len(frame), dtype=np.int64) - 7
    frame[num[1]] = pd.array([None if i % 5 == 0 else i for i in range(len(frame))], dtype="Int64")
    frame[num[2]] = np.arange(len(frame)) % 3 == 0
    frame[num[3]] = frame[num[3]].astype(object)
    first = {s["name"]: ["true", "paid_search"] for s in SCHEMA if s["dtype"] == "str"}
    other = {s["name"]: ["c_level", "false", "true"] for s in SCHEMA if s["dtype"] == "str"}
    values, slots = encode_columns(frame, SCHEMA, [first, other, dict(first)])
    assert values.flags.c_contiguous and len(values) == len(SCHEMA) + len(first)
    np.testing.assert_array_equal(slots[2], slots[0])
    for table, slot in zip((first, other, first), slots, strict=True):
        np.testing.assert_array_equal(values[slot].T, encode_frame(frame, SCHEMA, table))


def test_abs_logs_on_a_helper_thread_are_numpys_bits() -> None:
    """The batch's ``log1p(|x|)`` (:func:`training.batch_explain._abs_logs`: on a helper thread from a size
    on) is ``np.log1p(np.abs(x))`` to the bit, above and below that size, NaN, signed zeros and huge values
    included: the one-row path computes exactly that."""
    from leadscore.training.batch_explain import _SPLIT_MIN, _abs_logs

    rng = np.random.default_rng(11)
    for rows, cols in ((3, 5), (7, _SPLIT_MIN // 6 + 1), (1, _SPLIT_MIN + 3)):
        x = rng.standard_normal((rows, cols)) * 10.0 ** rng.integers(-8, 9, size=(rows, cols))
        x.flat[::17] = np.nan
        x.flat[1::19] = -0.0
        x.flat[2::23] = 0.0
        got = _abs_logs(x).result()
        assert got.shape == x.shape
        np.testing.assert_array_equal(got.view(np.int64), np.log1p(np.abs(x)).view(np.int64))


def test_factorized_categorical_is_the_factorize_of_its_text() -> None:
    """A categorical column's distinct values (unused categories dropped, missing -1) read from its codes are
    ``pd.factorize`` of the same values as text, up to the order of the distinct values."""
    dtype = pd.CategoricalDtype(pd.Index(["a", "b", "c", "d"], dtype="str"))
    for values in (["b", None, "d", "b"], ["a", "b", "c", "d", None], [None, None], []):
        col = pd.Series(pd.Categorical(values, dtype=dtype))
        frame = pd.DataFrame({"x": col, "y": col.astype("str")})
        cols = FrameColumns(frame)
        codes, uniques = cols.factorized("x")
        want_codes, want_uniques = pd.factorize(frame["y"], use_na_sentinel=True)
        assert isinstance(uniques, np.ndarray) and uniques.dtype == object
        assert sorted(uniques.tolist()) == sorted(want_uniques.tolist())
        got = [None if c < 0 else uniques[c] for c in codes.tolist()]
        assert got == [None if c < 0 else want_uniques[c] for c in want_codes.tolist()] == [
            v if isinstance(v, str) else None for v in values]


def test_encode_columns_of_categoricals_equals_the_text_encoding() -> None:
    """String columns held as categoricals (batch scoring's) are encoded through each table's remap of their
    dictionary: the same matrix as the text columns, with unknown, missing and unused categories, a table
    without the column, and again from the remaps kept (a later chunk of the same dictionaries)."""
    from leadscore.training.encoding import encode_columns

    frame = _rows(SCHEMA, 300, 5)
    text = [s["name"] for s in SCHEMA if s["dtype"] == "str"]
    coded = frame.copy()
    for name in text:
        values = frame[name].astype(object).where(frame[name].notna(), None)
        seen = sorted({v for v in values if isinstance(v, str)})
        coded[name] = pd.Categorical(values, categories=pd.Index([*seen, "never_seen"], dtype=object))
        frame[name] = values.astype("str")
    first = {name: ["true", "paid_search", "never_seen"] for name in text}
    other = {name: ["c_level", "false", "true"] for name in text[1:]}
    want, slots = encode_columns(frame, SCHEMA, [first, other])
    for _ in range(2):
        got, got_slots = encode_columns(coded, SCHEMA, [first, other])
        np.testing.assert_array_equal(got, want)
        for a, b in zip(got_slots, slots, strict=True):
            np.testing.assert_array_equal(a, b)
    half = coded.iloc[::2].reset_index(drop=True)  # a later chunk: the same dictionaries, other rows
    np.testing.assert_array_equal(encode_columns(half, SCHEMA, [first, other])[0],
                                  encode_columns(frame.iloc[::2].reset_index(drop=True), SCHEMA, [first, other])[0])


def test_category_terms_and_value_ids_of_categoricals_equal_the_text_paths() -> None:
    """A string column held as a categorical (batch scoring's) gives its logistic term through the coefficient
    per code of its dictionary, and its reasons' value ids through the ids per category: the same terms and
    values as the text column's factorisation, with missing values, unused and unknown categories."""
    from leadscore.training.linear import category_coefs
    from leadscore.training.reason_batch import Sentences

    frame = _rows(SCHEMA, 300, 6)
    name = next(s["name"] for s in SCHEMA if s["dtype"] == "str")
    values = frame[name].astype(object).where(frame[name].notna(), None)
    seen = sorted({v for v in values if isinstance(v, str)})
    coded = pd.Series(pd.Categorical(values, categories=pd.Index(["never_seen", *seen], dtype=object)))
    text = frame.assign(**{name: values.astype("str")})
    term = CategoricalTerm(name, {"true": 0.7, "(missing)": 0.1, "never_seen": 2.0, "absent": -1.0})
    codes, labels = FrameColumns(text).codes(name)
    want = np.array([term.coefs.get(v, 0.0) for v in labels])[codes]
    for _ in range(2):  # again from the table kept for the dictionary
        np.testing.assert_array_equal(category_coefs(term, coded.dtype)[coded.array.codes], want)
    sentences = Sentences()
    j = 4
    by_text = sentences.value_column(j, FrameColumns(text).factorized(name))
    by_code = sentences.category_ids(j, coded.dtype)[coded.array.codes]
    assert sentences.category_ids(j, coded.dtype) is sentences.category_ids(j, coded.dtype)
    np.testing.assert_array_equal(by_code, by_text)  # one table of value ids: the same value, the same id
    assert [None if t < 0 else sentences.values[j][t] for t in by_code.tolist()] == values.tolist()


def test_encode_columns_names_every_missing_column() -> None:
    """The batch encoding refuses a frame without every schema column, naming them all (one look-up serves
    the check and the copy), and reads the columns by name whatever their order in the frame."""
    from leadscore.training.encoding import encode_columns, encode_frame

    frame = _rows(SCHEMA, 40, 2)
    gone = [SCHEMA[0]["name"], SCHEMA[-1]["name"]]
    with pytest.raises(ValueError, match="missing column") as err:
        encode_columns(frame.drop(columns=gone), SCHEMA, [{}])
    assert all(name in str(err.value) for name in gone)
    shuffled = frame[list(reversed(frame.columns))]
    np.testing.assert_array_equal(encode_columns(shuffled, SCHEMA, [{}])[0].T, encode_frame(frame, SCHEMA, {}))


def test_group_sums_in_the_pass_are_the_one_row_sums() -> None:
    """The band's group sums made in the scoring pass (:func:`training.batch_pass._group_sums`) are what the
    service computes for one row (``group_sums`` of a one-row frame: numpy's pairwise sum of the selection),
    bit for bit, for every group size (the pairwise blocks of 8, 128 and beyond); the batch's old sum down
    the columns of a selection differed in the last bits."""
    from leadscore.training.bands import band_groups, group_sums
    from leadscore.training.batch_pass import _group_sums

    rng = np.random.default_rng(3)
    for size in [*range(0, 140), 255, 256, 257, 700]:
        c = rng.normal(size=(6, size + 5)) * 10.0 ** rng.integers(-6, 6, size=(6, size + 5))
        cols = np.sort(rng.choice(size + 5, size, replace=False))
        padded = np.append(cols, -1)
        got = np.empty((len(c), 1))
        _group_sums(c, 0, len(c), padded[None, :], got)
        for r in range(len(c)):
            want = c[r : r + 1, cols].sum(axis=1)[0]
            assert got[r, 0].view(np.int64) == np.float64(want).view(np.int64), (size, r)
    schema = [{"name": f"c{j}", "dtype": "float", "group": g} for j, g in enumerate(rng.choice(["fit", "interest", ""], 90))]
    groups = band_groups(schema)
    c = rng.normal(size=(20, 90))
    got = np.empty((len(c), len(groups)))
    _group_sums(c, 2, len(c), groups, got)  # from row 2: the bounds of a block are honoured
    for r in range(2, len(c)):
        one = group_sums(c[r : r + 1], schema)
        np.testing.assert_array_equal(got[r], [one["fit"][0], one["interest"][0]])
