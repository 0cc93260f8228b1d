"""Online == batch, bit for bit, on a generated CRM; and the online path's contract."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from leadscore.config import Settings
from leadscore.features import compute
from leadscore.features.engine import FeatureInputError
from leadscore.features.online import compute_many, compute_one
from leadscore.features.schema import feature_schema
from leadscore.features.testing import generated_history, sub_histories


@pytest.fixture(scope="module")
def crm(settings: Settings):
    return generated_history(settings, n_leads=1500, months=8, seed=11)


def _random_moments(history, n: int, seed: int) -> pd.DataFrame:
    """Random leads at random instants: activity times (the CRM's calls), and arbitrary instants."""
    rng = np.random.default_rng(seed)
    acts = history.activities
    pick = acts.iloc[rng.integers(0, len(acts), n // 2)]
    lead_ids = history.leads["lead_id"].to_numpy(dtype=object)
    start = history.leads["created_at"].min()
    span = (history.cutoff - start).total_seconds()
    arbitrary = pd.DataFrame({
        "lead_id": lead_ids[rng.integers(0, len(lead_ids), n - n // 2)],
        "as_of": start + pd.to_timedelta(rng.uniform(0, span, n - n // 2), unit="s"),
    })
    moments = pd.concat([pd.DataFrame({"lead_id": pick["lead_id"].to_numpy(dtype=object),
                                       "as_of": pick["occurred_at"].to_numpy()}), arbitrary], ignore_index=True)
    moments["as_of"] = pd.to_datetime(moments["as_of"], utc=True).astype("datetime64[us, UTC]")
    return moments


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return type(a) is type(b) and a == b


def test_online_equals_batch_on_500_random_moments(crm, settings: Settings) -> None:
    moments = _random_moments(crm, 520, seed=5)
    batch = compute(crm, moments, settings)
    schema = {s.name: s for s in feature_schema(settings)}
    # dtypes of the batch frame are the schema's
    for name, spec in schema.items():
        assert str(batch[name].dtype) == spec.dtype, name
    assert batch["rule_score"].dtype == np.float64
    mismatches = []
    make_sub = sub_histories(crm)
    subs: dict[str, object] = {}
    for i, (lead_id, as_of) in enumerate(zip(moments["lead_id"], moments["as_of"], strict=True)):
        sub = subs[lead_id] if lead_id in subs else subs.setdefault(lead_id, make_sub(lead_id))
        online = compute_one(sub, lead_id, as_of, settings)  # type: ignore[arg-type]
        assert list(online) == list(batch.columns)
        row = batch.iloc[i]
        for col in batch.columns[2:]:
            b = row[col]
            b = float(b) if isinstance(b, float | np.floating) else b
            o = online[col]
            if (schema.get(col) is not None and schema[col].dtype == "float64") or col == "rule_score":
                assert isinstance(o, float), (col, o)
            if not _same(o, b):
                mismatches.append((i, col, o, b))
        assert online["as_of"] == as_of
    assert not mismatches, mismatches[:10]


def test_compute_many_matches_compute_one(crm, settings: Settings) -> None:
    lead_id = crm.activities["lead_id"].value_counts().index[0]
    sub = sub_histories(crm)(lead_id)
    times = sub.activities.loc[sub.activities["lead_id"] == lead_id, "occurred_at"].sort_values().iloc[::7].tolist()
    many = compute_many(sub, lead_id, times, settings)
    for t, row in zip(times, many, strict=True):
        one = compute_one(sub, lead_id, t, settings)
        assert all(_same(row[k], one[k]) for k in one), t


def test_online_rejects_unknown_lead_naming_it(crm, settings: Settings) -> None:
    sub = sub_histories(crm)(crm.leads["lead_id"].iloc[0])
    with pytest.raises(FeatureInputError, match="nope"):
        compute_one(sub, "nope", "2026-01-01", settings)


def test_batch_rejects_unknown_moment_lead(crm, settings: Settings) -> None:
    moments = pd.DataFrame({"lead_id": ["missing-lead"], "as_of": [crm.cutoff]})
    with pytest.raises(FeatureInputError, match=r"moments\.lead_id.*missing-lead"):
        compute(crm, moments, settings)
    with pytest.raises(FeatureInputError, match=r"moments: missing column\(s\) as_of"):
        compute(crm, moments[["lead_id"]], settings)
