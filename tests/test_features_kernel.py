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
    for _, group, key, n_groups in _cases():
        order, ptr = group_sort(group, key, n_groups)
        assert np.array_equal(order, np.lexsort((np.arange(len(group)), key, group)))
        assert np.array_equal(ptr, np.concatenate([[0], np.cumsum(np.bincount(group, minlength=n_groups))]))
        assert is_sorted_by(group, key) == bool(np.array_equal(order, np.arange(len(group))))


def test_account_times_are_each_accounts_sorted_times() -> None:
    for rng, lead, t, _ in _cases(seed=5):
        n_leads = int(lead.max()) + 1 if len(lead) else 1
        n_acc = int(rng.integers(1, 4))
        lead_acc = rng.integers(-1, n_acc, n_leads).astype(np.int64)
        k = rng.integers(0, 4, len(lead)).astype(np.int64)
        high = np.array([False, True, False, True])
        ptr, out, hptr, hout = account_times(lead, lead_acc, t, k, high, n_acc)
        acc = lead_acc[lead] if len(lead) else lead
        for a in range(n_acc):
            assert np.array_equal(out[ptr[a]:ptr[a + 1]], np.sort(t[acc == a]))
            assert np.array_equal(hout[hptr[a]:hptr[a + 1]], np.sort(t[(acc == a) & high[k]]))


def test_prepare_on_two_threads_gives_the_same_arrays(settings, monkeypatch) -> None:
    """The fit block on its own thread (histories of many leads) yields exactly the inline result, and
    shuffled input (no pre-sorted fast path, accounts' times out of order) the same kernel arrays."""
    from leadscore.features import engine
    from leadscore.features.testing import generated_history

    h = generated_history(settings, n_leads=300, months=4, seed=2)
    inline = engine.prepare(h, settings)
    monkeypatch.setattr(engine, "_OVERLAP_MIN", 0)
    threaded = engine.prepare(h, settings)
    shuffled = engine.prepare(type(h)(**{**vars(h), "activities": h.activities.sample(frac=1.0, random_state=4)
                                         .reset_index(drop=True)}), settings)
    for got in (threaded, shuffled):
        for a, b in zip(inline.fit_cat + inline.fit_num, got.fit_cat + got.fit_num, strict=True):
            assert pd.Series(a).equals(pd.Series(b))  # object arrays: NaN == NaN here
        for name, a, b in zip(inline.inputs._fields, inline.inputs, got.inputs, strict=True):
            np.testing.assert_array_equal(a, b, err_msg=name)
