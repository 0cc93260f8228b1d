"""The preparation's sorting blocks against plain numpy references, on random and on pre-sorted input."""

from __future__ import annotations

import numpy as np
import pandas as pd

from leadscore.features.kernel import account_times, group_sort, is_sorted_by


def _cases(seed: int = 3, n_cases: int = 150):
    rng = np.random.default_rng(seed)
    for case in range(n_cases):
        n = int(rng.integers(0, 80))
        n_groups = int(rng.integers(1, 6))
        group = rng.integers(0, n_groups, n).astype(np.int64)
        key = rng.integers(0, 12, n).astype(np.int64)
        if case % 3 == 0:  # grouped input, as a lead-major export arrives
            order = np.lexsort((key, group)) if case % 2 else np.argsort(group, kind="stable")
            group, key = group[order], key[order]
        yield rng, group, key, n_groups


def test_group_sort_is_a_stable_sort_by_group_then_key() -> None:
    for rng, group, key, n_groups in _cases():
        order, ptr = group_sort(group, key, n_groups, np.ones(len(group), dtype=bool))
        assert np.array_equal(order, np.lexsort((np.arange(len(group)), key, group)))
        assert np.array_equal(ptr, np.concatenate([[0], np.cumsum(np.bincount(group, minlength=n_groups))]))
        assert is_sorted_by(group, key) == bool(np.array_equal(order, np.arange(len(group))))
        # rows left out (group -1 or masked) are not in the order; the others keep their stable order
        keep = rng.random(len(group)) < 0.7
        group = np.where(rng.random(len(group)) < 0.1, -1, group)
        keep &= group >= 0
        order, ptr = group_sort(group, key, n_groups, keep)
        rows = np.flatnonzero(keep)
        assert np.array_equal(order, rows[np.lexsort((rows, key[rows], group[rows]))])
        assert np.array_equal(ptr, np.concatenate([[0], np.cumsum(np.bincount(group[rows], minlength=n_groups))]))


def test_account_times_are_each_accounts_sorted_times() -> None:
    for rng, lead, t, _ in _cases(seed=5):
        n_leads = int(lead.max()) + 1 if len(lead) else 1
        n_acc = int(rng.integers(1, 4))
        lead_acc = rng.integers(-1, n_acc, n_leads).astype(np.int64)
        k = rng.integers(0, 4, len(lead)).astype(np.int64)
        high = np.array([False, True, False, True])
        keep = rng.random(len(lead)) < 0.8
        ptr, out, hptr, hout = account_times(lead, lead_acc, t, k, high, n_acc, keep)
        acc = lead_acc[lead] if len(lead) else lead
        for a in range(n_acc):
            assert np.array_equal(out[ptr[a]:ptr[a + 1]], np.sort(t[(acc == a) & keep]))
            assert np.array_equal(hout[hptr[a]:hptr[a + 1]], np.sort(t[(acc == a) & high[k] & keep]))


def _same(a: object, b: object) -> bool:
    """Equal values of equal kinds (str / float), NaN equal to NaN, floats bit for bit."""
    if isinstance(a, float) and isinstance(b, float):
        return np.float64(a).tobytes() == np.float64(b).tobytes()
    return type(a) is type(b) and a == b


def test_batch_fit_columns_equal_fit_row_per_lead(settings) -> None:
    """The batch fit block (each part of ``fit_row`` once per distinct value, then gathered) gives every
    lead exactly ``fit_row`` of its values, on a generated history and on leads with every kind of odd
    cell (blank, None, NaN, pd.NA, case, unknown CRM values, no account); and shuffled activities give
    the same kernel arrays."""
    from leadscore.features import engine
    from leadscore.features.arrays import column, objects
    from leadscore.features.fit import fit_row, fit_rules
    from leadscore.features.testing import generated_history

    h = generated_history(settings, n_leads=300, months=4, seed=2)
    odd_leads = pd.DataFrame({
        "lead_id": [f"odd{i}" for i in range(8)],
        "created_at": pd.Timestamp("2024-01-01", tz="UTC"),
        "account_id": [h.accounts["account_id"].iloc[0], None, "nope", h.accounts["account_id"].iloc[1], None,
                       h.accounts["account_id"].iloc[0], None, None],
        "source": ["Paid Search", "  ", None, "paid  search", "PAID_SEARCH", np.nan, "x", "Referral"],
        "job_title": ["Head of Marketing", "", None, "VP Sales", "Geschäftsführerin", "CEO", "  ceo ", "Intern"],
        "seniority": ["VP", "unknown-level", None, " vp ", "", "c_level", "Director", pd.NA],
        "department": [None, "Sales", "sales", "", "finance", "nonsense", None, "Marketing"],
        "email_domain": ["jane@GMAIL.com", "corp.example", "", None, "gmail.com", " Gmail.com ", "x@y.de", None],
        "country": ["de", None, " fr", "", "US", None, "de", "DE"],
    }).astype({c: "str" for c in ["lead_id", "account_id", "source", "job_title", "seniority", "department",
                                  "email_domain", "country"]})
    leads = pd.concat([h.leads, odd_leads[[c for c in odd_leads.columns if c in h.leads.columns]]],
                      ignore_index=True)
    rich = type(h)(**{**vars(h), "leads": leads})
    prep = engine.prepare(rich, settings)
    rules = fit_rules(settings)
    lead_acc = prep.inputs.lead_acc
    lead_names = ("source", "job_title", "seniority", "department", "email_domain", "country")
    acc_names = ("industry", "employees", "annual_revenue", "country")
    lead_vals = [objects(column(leads, c)) for c in lead_names]
    acc_vals = [objects(column(h.accounts, c)) for c in acc_names]
    got = prep.fit_cat + prep.fit_num
    for i in range(len(leads)):
        a = int(lead_acc[i])
        want = fit_row(*(v[i] for v in lead_vals), *((v[a] for v in acc_vals) if a >= 0 else [np.nan] * 4),
                       rules=rules)
        assert all(_same(w, g[i]) for w, g in zip(want, got, strict=True)), (i, want, [g[i] for g in got])
        online = engine.prepare(rich, settings, only_lead=leads["lead_id"].iloc[i]) if i % 97 == 0 or i >= 300 else None
        if online is not None:  # the online preparation (fit_row of the one lead) agrees too
            assert all(_same(g[i], o[i]) for g, o in zip(got, online.fit_cat + online.fit_num, strict=True))
    shuffled = engine.prepare(type(h)(**{**vars(rich), "activities": h.activities.sample(frac=1.0, random_state=4)
                                         .reset_index(drop=True)}), settings)
    for name, a, b in zip(prep.inputs._fields, prep.inputs, shuffled.inputs, strict=True):
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_decayed_sums_equal_the_direct_formula(settings) -> None:
    """The decay family and the rule's points use a running product of per-activity factors (one ``exp``
    per moment, not per activity and moment): each value equals the direct sum of
    ``2^(-age / half-life)`` to 1e-12 of the sum of its terms' sizes, on a generated history and on a
    lead whose activities span ten years (weights that underflow)."""
    from leadscore.features import engine
    from leadscore.features import testing as T
    from leadscore.features.kernel import DAY_US
    from leadscore.features.moments import moment_arrays
    from leadscore.features.registry import registry
    from leadscore.features.schema import decay_name
    from leadscore.features.testing import generated_history

    h = generated_history(settings, n_leads=200, months=6, seed=4)
    t0 = pd.Timestamp("2016-01-01", tz="UTC")
    old = T.history("2026-06-01", leads=[{"lead_id": "old", "created_at": t0}],
                    activities=[{"activity_id": f"o{i}", "lead_id": "old", "type": "page_view",
                                 "occurred_at": t0 + pd.Timedelta(days=float(d))}
                                for i, d in enumerate(np.cumsum(np.random.default_rng(1).exponential(40, 90)))])
    reg, names = registry(settings), settings.activity_names
    decay, rule = reg.family("decay"), reg.family("rule")
    assert decay is not None and rule is not None
    points, window, rule_hl = rule.kernel_params[:3]
    for hist in (h, old):
        prep = engine.prepare(hist, settings)
        m_lead, m_t = moment_arrays(hist, settings, prep)
        m_lead = np.concatenate([m_lead, np.zeros(5, dtype=np.int64)])
        m_t = np.concatenate([m_t, prep.act_t[:5] + 7 * DAY_US])
        out = engine.run(prep, m_lead, m_t)
        x = prep.inputs
        for lead, t, col in zip(m_lead, m_t, out.T, strict=True):
            lo, hi = x.act_ptr[lead], x.act_ptr[lead + 1]
            keep = x.act_t[lo:hi] <= t
            age, k = (t - x.act_t[lo:hi][keep]) / DAY_US, x.act_k[lo:hi][keep]
            for hl in settings.features.half_lives_days:
                w = np.exp2(-age / hl)
                for code, name in enumerate(names):
                    ref = w[k == code].sum()
                    got = col[reg.slot[decay_name(name, hl)]]
                    assert abs(got - ref) <= 1e-12 * ref + 1e-300, (name, hl, got, ref)
                assert abs(col[reg.slot[decay_name("total", hl)]] - w.sum()) <= 1e-12 * w.sum() + 1e-300
            inside = age * DAY_US < window
            terms = points[k[inside]] * (np.exp(-age[inside] * rule_hl[0]) if len(rule_hl) else 1.0)
            got = col[reg.slot["rule_points"]]
            assert abs(got - terms.sum()) <= 1e-12 * np.abs(terms).sum() + 1e-300, (got, terms.sum())


def test_sales_touches_are_masked_out_by_actor_and_by_type(settings) -> None:
    """``prepare`` drops sales touches by masking its code arrays (no filtered copy of the frame): the
    kernel arrays equal those of the history without them (``features.actors.lead_side``), with
    non-canonical type names, a sales type sent by the lead's side and a duplicated id in the mix."""
    from leadscore.features import engine
    from leadscore.features import testing as T
    from leadscore.features.actors import lead_side

    t0 = pd.Timestamp("2026-03-01", tz="UTC")
    rows = [("a0", "L0", 0, "page_view", "lead"), ("a1", "L0", 1, "sales_call", "lead"),
            ("a2", "L0", 2, "page_view", "sales"), ("a3", "L1", 3, " Demo_Request ", "lead"),
            ("a4", "L1", 3, "sales_email", None), ("a5", "L0", 4, "podcast", "lead"),
            ("a0", "L0", 5, "email_open", "lead"), ("a6", "L1", 6, "meeting_held", "sales")]
    h = T.history("2026-06-01", leads=[{"lead_id": "L0", "created_at": t0}, {"lead_id": "L1", "created_at": t0}],
                  activities=[{"activity_id": i, "lead_id": lead, "occurred_at": t0 + pd.Timedelta(days=d),
                               "type": typ, "actor": actor} for i, lead, d, typ, actor in rows])
    got = engine.prepare(h, settings).inputs
    ref = engine.prepare(type(h)(**{**vars(h), "activities": lead_side(h.activities, settings)}), settings).inputs
    for name, a, b in zip(got._fields, got, ref, strict=True):
        assert np.array_equal(a, b), name
    names = settings.activity_names
    assert [names[k] for k in got.act_k] == ["page_view", "other", "demo_request"]


def test_loaded_keys_are_known_distinct_until_the_column_changes(settings) -> None:
    """``load_history`` marks each table's key distinct (validation rejected every repeat), so the engine
    skips proving it; a replayed, edited or re-built column is not marked and is still de-duplicated."""
    from leadscore.features import engine
    from leadscore.features.arrays import column, surely_distinct
    from leadscore.features.testing import generated_crm_dir
    from leadscore.history import load_history
    from leadscore.tables import known_distinct

    h, _ = load_history(generated_crm_dir(settings, 300, 4, 2), settings, write_rejected=False)
    ids = column(h.activities, "activity_id")
    assert known_distinct(ids) and known_distinct(column(h.leads, "lead_id"))
    assert not known_distinct(column(h.activities, "lead_id"))
    replayed = pd.concat([h.activities, h.activities.iloc[:50]], ignore_index=True)
    edited = h.activities.copy()
    edited.loc[0, "activity_id"] = edited.loc[1, "activity_id"]
    for acts in (replayed, edited):
        assert not known_distinct(column(acts, "activity_id"))
        assert not surely_distinct(column(acts, "activity_id"))
    clean = engine.prepare(h, settings)
    again = engine.prepare(type(h)(**{**vars(h), "activities": replayed}), settings)
    for name, a, b in zip(clean.inputs._fields, clean.inputs, again.inputs, strict=True):
        np.testing.assert_array_equal(a, b, err_msg=name)
    one_less = engine.prepare(type(h)(**{**vars(h), "activities": edited}), settings)
    assert len(one_less.inputs.act_t) == len(clean.inputs.act_t) - 1
    # a column proven distinct the slow way is remembered
    rebuilt = pd.Series(list(ids), dtype=ids.dtype).array
    assert not known_distinct(rebuilt) and surely_distinct(rebuilt) and known_distinct(rebuilt)


def test_account_arrays_on_a_second_thread_are_the_same(settings, monkeypatch) -> None:
    """A big history matches the type names and builds the account arrays on a second thread (before
    the sort when the ids are distinct, after the de-duplication when not): same arrays."""
    from leadscore.features import engine
    from leadscore.features.testing import generated_history

    h = generated_history(settings, n_leads=300, months=4, seed=2)
    replayed = type(h)(**{**vars(h), "activities": pd.concat([h.activities, h.activities.sample(n=500, random_state=3)],
                                                              ignore_index=True)})
    for hist in (h, replayed):
        monkeypatch.setattr(engine, "_OVERLAP_MIN", 10**9)
        inline = engine.prepare(hist, settings)
        monkeypatch.setattr(engine, "_OVERLAP_MIN", 0)
        threaded = engine.prepare(hist, settings)
        for name, a, b in zip(inline.inputs._fields, inline.inputs, threaded.inputs, strict=True):
            np.testing.assert_array_equal(a, b, err_msg=name)
        for a, b in zip(inline.fit_cat + inline.fit_num, threaded.fit_cat + threaded.fit_num, strict=True):
            assert pd.Series(a).equals(pd.Series(b))
    clean = engine.prepare(h, settings)
    for name, a, b in zip(clean.inputs._fields, clean.inputs, threaded.inputs, strict=True):
        np.testing.assert_array_equal(a, b, err_msg=name)  # the replayed rows counted once
