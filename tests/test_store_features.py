"""The event store hands the feature kernel arrays, and they give the batch row bit for bit.

A generated CRM is imported into a SQLite store; random moments of random leads (big accounts
included) are read with and without the activity cache and scored by the online kernel call; every
value must equal the batch ``features.compute`` row of the full history. Then: activities arriving
after the read (in order and late) keep the cached roll-ups exact, and scoring a stored lead builds
no DataFrame.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from leadscore.config import Settings
from leadscore.features import compute
from leadscore.features.online import compute_arrays
from leadscore.features.testing import generated_history
from leadscore.serving.store import EventStore, to_micros
from tests.conftest import SmallModel


@pytest.fixture(scope="module")
def crm(settings: Settings):
    return generated_history(settings, n_leads=1500, months=8, seed=11)


@pytest.fixture(scope="module", params=[1_000_000, 0], ids=["cache", "sql"])
def store(request: pytest.FixtureRequest, crm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EventStore]:
    path = tmp_path_factory.mktemp("store") / "events.db"
    s = EventStore(f"sqlite:///{path}", cache_rows=request.param)
    s.import_history(crm)
    yield s
    s.close()


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return type(a) is type(b) and a == b


def _moments(crm, n: int, seed: int) -> pd.DataFrame:
    """Activity times of random leads, half of them leads of the biggest accounts, plus arbitrary instants."""
    rng = np.random.default_rng(seed)
    acts = crm.activities
    sizes = crm.leads.groupby("account_id")["lead_id"].transform("size")
    big = set(crm.leads.loc[sizes >= sizes.quantile(0.9), "lead_id"])
    of_big = acts[acts["lead_id"].isin(big)]
    pick = pd.concat([acts.iloc[rng.integers(0, len(acts), n // 3)], of_big.iloc[rng.integers(0, len(of_big), n // 3)]])
    lead_ids = crm.leads["lead_id"].to_numpy(dtype=object)
    start = crm.leads["created_at"].min()
    span = (crm.cutoff - start).total_seconds()
    k = n - len(pick)
    moments = pd.concat([
        pd.DataFrame({"lead_id": pick["lead_id"].to_numpy(dtype=object), "as_of": pick["occurred_at"].to_numpy()}),
        pd.DataFrame({"lead_id": lead_ids[rng.integers(0, len(lead_ids), k)],
                      "as_of": start + pd.to_timedelta(rng.uniform(0, span, k), unit="s")})], ignore_index=True)
    moments["as_of"] = pd.to_datetime(moments["as_of"], utc=True).astype("datetime64[us, UTC]")
    return moments


def _mismatches(store: EventStore, crm, moments: pd.DataFrame, settings: Settings) -> list[tuple[object, ...]]:
    batch = compute(crm, moments, settings)
    out = []
    with store.read() as conn:
        for i, (lead_id, as_of) in enumerate(zip(moments["lead_id"], moments["as_of"], strict=True)):
            online = compute_arrays(store.load_lead(conn, lead_id, as_of, settings), [as_of], settings)[0]
            assert list(online) == list(batch.columns)
            row = batch.iloc[i]
            for col in batch.columns[2:]:
                b = row[col]
                b = float(b) if isinstance(b, float | np.floating) else b
                if not _same(online[col], b):
                    out.append((lead_id, as_of, col, online[col], b))
    return out


def test_store_arrays_give_the_batch_row(store: EventStore, crm, settings: Settings) -> None:
    moments = _moments(crm, 300, seed=3)
    assert not _mismatches(store, crm, moments, settings)[:10]
    if store.cache is not None:
        assert store.cache.stats["hits"] > 0


def test_cached_rollups_stay_exact_as_activities_arrive(crm, settings: Settings, tmp_path: Path) -> None:
    """In-order and late activities of colleagues, written by another store (process), after reads."""
    url = f"sqlite:///{tmp_path / 'e.db'}"
    writer, cached = EventStore(url), EventStore(url, cache_rows=1_000_000)
    writer.import_history(crm)
    sizes = crm.leads.groupby("account_id").size()
    account = sizes.idxmax()
    members = crm.leads.loc[crm.leads["account_id"] == account, "lead_id"].tolist()
    lead, colleague = members[0], members[1]
    t = crm.cutoff - pd.Timedelta(days=3)
    added = []
    with cached.read() as conn:
        cached.load_lead(conn, lead, t, settings)  # fill the cache
    for i, (who, at, typ, actor) in enumerate([
            (colleague, t - pd.Timedelta(hours=1), "demo_request", "lead"),
            (colleague, t - pd.Timedelta(days=10), "pricing_page_view", "lead"),  # late
            (lead, t - pd.Timedelta(days=2), "page_view", "lead"),
            (lead, t - pd.Timedelta(hours=2), "sales_call", "sales"),  # a rep's touch: never interest
            (colleague, t - pd.Timedelta(hours=3), "email_click", "sales"),  # sales-side by actor alone
            (colleague, t + pd.Timedelta(hours=5), "trial_signup", "lead")]):
        row = {"activity_id": f"new-{i}", "lead_id": who, "occurred_at": to_micros(at), "type": typ,
               "actor": actor, "properties": None, "received_at": 0}
        with writer.begin() as conn:
            writer.add_activities(conn, [row])
        added.append({**row, "occurred_at": at})
        new = pd.DataFrame(added)[["activity_id", "lead_id", "occurred_at", "type", "actor", "properties"]]
        new["occurred_at"] = pd.to_datetime(new["occurred_at"], utc=True).astype("datetime64[us, UTC]")
        full = type(crm)(crm.accounts, crm.leads,
                         pd.concat([crm.activities, new.astype(crm.activities.dtypes.to_dict())], ignore_index=True),
                         crm.stage_changes, crm.opportunities, crm.cutoff)
        moments = pd.DataFrame({"lead_id": [lead, colleague, lead], "as_of": [t, t, t + pd.Timedelta(days=1)]})
        moments["as_of"] = moments["as_of"].astype("datetime64[us, UTC]")
        assert not _mismatches(cached, full, moments, settings)
    assert cached.cache is not None and cached.cache.stats["hits"] >= 6
    writer.close()
    cached.close()


def test_scoring_a_stored_lead_builds_no_dataframe(small_model: SmallModel, crm, settings: Settings,
                                                  tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from leadscore.serving.scoring import Scorer

    scorer = Scorer.load(settings, bundle_dir=small_model.bundle_dir)
    store = EventStore(f"sqlite:///{tmp_path / 'e.db'}", cache_rows=1_000_000)
    store.import_history(crm)
    lead = crm.activities["lead_id"].value_counts().index[0]
    with store.read() as conn:  # warm: the bundle's lazily built predictors and the cache
        scorer.score(store.load_lead(conn, lead, crm.cutoff, settings), lead, crm.cutoff, None)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a DataFrame was built on the online scoring path")

    monkeypatch.setattr(pd.DataFrame, "__init__", refuse)
    with store.read() as conn:
        arrays = store.load_lead(conn, lead, crm.cutoff - pd.Timedelta(days=1), settings)
        result = scorer.score(arrays, lead, crm.cutoff - pd.Timedelta(days=1), "lead")
    monkeypatch.undo()
    assert 0.0 <= result.p_sql <= 1.0 and result.reasons["positive"] is not None
    store.close()


def test_cached_membership_follows_the_leads_table_by_version(crm, settings: Settings, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process moves a lead out of the account and corrects a creation time (plain SQL, no store
    code): the roll-ups stay exact; while nothing changes, a read checks one version row, not the members."""
    import sqlite3

    import leadscore.serving.cache as cache_module

    reads: list[str] = []
    real = cache_module.members
    monkeypatch.setattr(cache_module, "members", lambda raw, account_id: reads.append(account_id) or real(raw, account_id))
    db = tmp_path / "e.db"
    EventStore(f"sqlite:///{db}").import_history(crm)
    cached = EventStore(f"sqlite:///{db}", cache_rows=1_000_000)
    sizes = crm.leads.groupby("account_id").size().sort_values()
    account, elsewhere = sizes.index[-1], sizes.index[0]
    members = crm.leads.loc[crm.leads["account_id"] == account, "lead_id"].tolist()
    lead, leaver, corrected = members[0], members[1], members[2]
    t = crm.cutoff - pd.Timedelta(days=3)
    moment = pd.DataFrame({"lead_id": [lead], "as_of": pd.Series([t]).astype("datetime64[us, UTC]")})
    assert not _mismatches(cached, crm, moment, settings)
    assert not _mismatches(cached, crm, moment, settings)
    assert reads == [account]  # the second read compared the version only

    leads = crm.leads.copy()
    new_created = leads.loc[leads["lead_id"] == corrected, "created_at"].iloc[0] - pd.Timedelta(days=40)
    with sqlite3.connect(db) as other:
        other.execute("UPDATE leads SET account_id = ? WHERE lead_id = ?", (elsewhere, leaver))
        other.execute("UPDATE leads SET created_at = ? WHERE lead_id = ?", (to_micros(new_created), corrected))
    leads.loc[leads["lead_id"] == leaver, "account_id"] = elsewhere
    leads.loc[leads["lead_id"] == corrected, "created_at"] = new_created
    moved = type(crm)(crm.accounts, leads, crm.activities, crm.stage_changes, crm.opportunities, crm.cutoff)
    assert not _mismatches(cached, moved, moment, settings)
    assert reads == [account, account]
    cached.close()


def test_a_lead_sent_as_rows_gives_the_batch_row_of_that_lead_alone(crm, settings: Settings) -> None:
    """``POST /score``'s arrays (``rows_arrays``: the lead, its account, its activities, duplicates
    included) give the row ``compute_one`` gives on a history holding just them, bit for bit."""
    from leadscore.features.online import compute_one, rows_arrays

    rng = np.random.default_rng(5)
    acts = crm.activities
    leads = crm.leads.set_index("lead_id", drop=False)
    accounts = crm.accounts.set_index("account_id", drop=False)
    busy = acts["lead_id"].value_counts()
    for lead_id in busy.index[rng.integers(0, len(busy), 12)]:
        lead_row = leads.loc[lead_id]
        own = acts[acts["lead_id"] == lead_id]
        own = pd.concat([own, own.iloc[:3]]).sample(frac=1.0, random_state=1)  # a retry twice, shuffled
        account_id = lead_row["account_id"]
        has_account = isinstance(account_id, str) and account_id in accounts.index
        history = type(crm)(crm.accounts[crm.accounts["account_id"] == account_id], crm.leads[crm.leads["lead_id"] == lead_id],
                            own, crm.stage_changes.iloc[:0], crm.opportunities.iloc[:0], crm.cutoff)

        def stored(row: pd.Series) -> dict[str, object]:
            out = {k: (None if v is pd.NA or (isinstance(v, float) and math.isnan(v)) else v) for k, v in row.items()}
            return {**out, "created_at": to_micros(row["created_at"])}

        arrays = rows_arrays(stored(lead_row), stored(accounts.loc[account_id]) if has_account else None,
                             [(a, to_micros(t), typ, who) for a, t, typ, who in zip(
                                 own["activity_id"], own["occurred_at"], own["type"], own["actor"], strict=True)],
                             settings)
        for as_of in (own["occurred_at"].max(), crm.cutoff):
            as_of = pd.Timestamp(as_of).as_unit("us")
            want = compute_one(history, lead_id, as_of, settings)
            got = compute_arrays(arrays, [as_of], settings)[0]
            assert list(got) == list(want)
            bad = [(c, got[c], want[c]) for c in want if not _same(got[c], float(want[c]) if isinstance(
                want[c], np.floating) else want[c])]
            assert not bad, (lead_id, bad[:5])
