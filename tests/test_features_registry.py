"""The feature registry: families declared once, switched and parameterised from the config.

The content-breadth family (off by default) is the worked example of adding a family: it lives in
one module, ``features/families/content.py``, and this test.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from leadscore.config import Settings, load_settings
from leadscore.errors import ConfigError
from leadscore.features import compute
from leadscore.features import testing as T
from leadscore.features.online import compute_one
from leadscore.features.registry import INPUTS, all_families, registry
from leadscore.features.schema import feature_names, schema_hash

T0 = pd.Timestamp("2026-03-01", tz="UTC")
CONTENT_ON = "features.families={content_breadth: {enabled: true}}"


def _history() -> object:
    day = pd.Timedelta(days=1)
    acts = [("L0", 0, "content_download"), ("L0", 1, "content_download"), ("L0", 20, "webinar_attended"),
            ("L0", 40, "content_download"), ("L0", 45, "page_view"), ("L1", 44, "webinar_attended"),
            ("L1", 44.5, "demo_request"), ("L1", 80, "content_download")]
    return T.history(
        "2026-12-31",
        accounts=[{"account_id": "A", "industry": "software", "employees": 120, "created_at": T0}],
        leads=[{"lead_id": "L0", "account_id": "A", "created_at": T0}, {"lead_id": "L1", "account_id": "A", "created_at": T0}],
        activities=[{"activity_id": f"a{i}", "lead_id": lead, "occurred_at": T0 + d * day, "type": typ}
                    for i, (lead, d, typ) in enumerate(acts)],
    )


def _moments() -> pd.DataFrame:
    return pd.DataFrame({"lead_id": ["L0", "L0", "L0", "L0", "L1", "L1"],
                         "as_of": [T0 - pd.Timedelta(days=1), T0 + pd.Timedelta(days=10), T0 + pd.Timedelta(days=25),
                                   T0 + pd.Timedelta(days=50), T0 + pd.Timedelta(days=45),
                                   T0 + pd.Timedelta(days=79)]}).astype({"as_of": "datetime64[us, UTC]"})


def test_a_switched_off_family_changes_nothing(settings: Settings) -> None:
    assert "content_kinds_30d" not in feature_names(settings)
    # restating a default is not a change either: same hash, same columns
    same = load_settings(overrides=["features.families={content_breadth: {enabled: false, window_days: 9}}",
                                    "features.account_window_days=30"])
    assert schema_hash(same) == schema_hash(settings) and feature_names(same) == feature_names(settings)


def test_content_breadth_counts_distinct_content_types_in_its_window(settings: Settings) -> None:
    on = load_settings(overrides=[CONTENT_ON])
    names = feature_names(on)
    assert names == [*feature_names(settings), "content_kinds_30d"]  # appended: the others keep their place
    assert schema_hash(on) != schema_hash(settings)
    h, moments = _history(), _moments()
    got = compute(h, moments, on)
    # none yet; one kind (two downloads); two kinds; day 50: download at 40 (webinar at 20 is 30 days old)
    assert got["content_kinds_30d"].tolist() == [0.0, 1.0, 2.0, 1.0, 1.0, 0.0]
    base = compute(h, moments, settings)
    pd.testing.assert_frame_equal(got.drop(columns="content_kinds_30d"), base, check_exact=True)
    for i, (lead, as_of) in enumerate(zip(moments["lead_id"], moments["as_of"], strict=True)):
        assert compute_one(h, lead, as_of, on)["content_kinds_30d"] == got["content_kinds_30d"].iloc[i]  # type: ignore[arg-type]
    wide = load_settings(overrides=["features.families={content_breadth: {enabled: true, window_days: 60, "
                                    "types: [content_download, webinar_attended, demo_request]}}"])
    assert compute(h, moments, wide)["content_kinds_60d"].tolist() == [0.0, 1.0, 2.0, 2.0, 2.0, 2.0]


def test_family_config_errors_name_the_family() -> None:
    with pytest.raises(ConfigError, match="unknown family"):
        registry(load_settings(overrides=["features.families={nope: {enabled: true}}"]))
    with pytest.raises(ConfigError, match="content_breadth"):
        registry(load_settings(overrides=["features.families={content_breadth: {enabled: true, windw_days: 3}}"]))
    with pytest.raises(ConfigError, match="not in the activity catalogue"):
        registry(load_settings(overrides=["features.families={content_breadth: {enabled: true, types: [podcast]}}"]))


def test_account_window_is_config(settings: Settings) -> None:
    short = load_settings(overrides=["features.account_window_days=10"])
    names = feature_names(short)
    assert "account_other_leads_activities_10d" in names and "account_other_leads_activities_30d" not in names
    assert schema_hash(short) != schema_hash(settings)
    h, moments = _history(), _moments()
    got = compute(h, moments, short)
    # L1 at day 45: L0's activities in (35, 45] are the download at 40 and the page view at 45
    assert got.loc[4, "account_other_leads_activities_10d"] == 2.0
    assert compute(h, moments, settings).loc[4, "account_other_leads_activities_30d"] == 3.0  # and the webinar at 20


def test_switching_a_family_off_drops_its_columns_only(settings: Settings) -> None:
    off = load_settings(overrides=["features.families={velocity: {enabled: false}, active_days: {enabled: false}}"])
    gone = {"velocity_7_28", "active_days_7d", "active_days_30d", "active_days_90d"}
    assert feature_names(off) == [n for n in feature_names(settings) if n not in gone]
    h, moments = _history(), _moments()
    pd.testing.assert_frame_equal(compute(h, moments, off), compute(h, moments, settings).drop(columns=sorted(gone)),
                                  check_exact=True)


def test_each_family_reads_only_the_inputs_it_declares() -> None:
    import inspect

    for fam in all_families():
        assert fam.inputs <= INPUTS
        if fam.kernel is None:
            assert not fam.inputs, fam.name
            continue
        source = inspect.getsource(fam.kernel.py_func)
        if fam.derive is not None:  # what a family derives per activity counts as read too
            source += inspect.getsource(fam.derive.py_func)
        assert set(re.findall(r"\bx\.(\w+)", source)) == set(fam.inputs), fam.name


def test_slots_are_generated_contiguously_per_family(settings: Settings) -> None:
    reg = registry(load_settings(overrides=[CONTENT_ON]))
    pos = 0
    for r in reg.families:
        assert r.offset == pos or not r.slots
        assert [reg.slot[s] for s in r.slots] == list(range(pos, pos + len(r.slots)))
        pos += len(r.slots)
    assert reg.width == pos
    assert np.unique(list(reg.slot.values())).size == reg.width
