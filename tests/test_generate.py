"""The generated CRM: deterministic, calibrated to its funnel rates, with a predictive ground truth."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from leadscore.cli import app
from leadscore.config import Settings
from leadscore.generate import generate_crm
from leadscore.history import load_history
from leadscore.scenarios import scenario_named


@pytest.fixture(scope="module")
def crm_5k(tmp_path_factory: pytest.TempPathFactory, settings: Settings) -> tuple[Path, dict[str, object]]:
    out = tmp_path_factory.mktemp("crm5k")
    return out, generate_crm(out, n_leads=5000, months=12, seed=1, settings=settings)


def _digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.glob("*.parquet"))}


def test_same_seed_same_files(tmp_path: Path, settings: Settings) -> None:
    generate_crm(tmp_path / "a", n_leads=400, months=6, seed=5, settings=settings)
    generate_crm(tmp_path / "b", n_leads=400, months=6, seed=5, settings=settings)
    generate_crm(tmp_path / "c", n_leads=400, months=6, seed=6, settings=settings)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a")["activities.parquet"] != _digest(tmp_path / "c")["activities.parquet"]


def test_generated_history_is_valid(crm_5k: tuple[Path, dict[str, object]], settings: Settings) -> None:
    directory, summary = crm_5k
    history, report = load_history(directory, settings, write_rejected=False)
    assert report.usable
    assert all(t.rejected_rows == 0 for t in report.tables.values()), report.to_dict()
    assert len(history.activities) == summary["activities"]
    assert 60 < len(history.activities) / len(history.leads) < 140
    acts = history.activities
    lead_side = acts["actor"] == "lead"
    assert set(acts.loc[lead_side, "type"]) <= set(settings.activity_names)
    # the reps' touches (issue 16): sales-side types only, each on a lead sales owns
    assert set(acts.loc[~lead_side, "type"]) == {"sales_call", "sales_email", "meeting_held"}
    owned = set(history.leads.dropna(subset=["owner"])["lead_id"])
    assert set(acts.loc[~lead_side, "lead_id"]) <= owned
    titles = history.leads["job_title"].dropna()
    assert titles.str.contains("Responsabile").any() and titles.str.contains("Directora de").any()
    assert set(history.stage_changes["stage"]) >= {"lead", "mql", "sql", "opportunity", "customer", "recycled", "disqualified"}


def test_funnel_rates_match_the_configuration(crm_5k: tuple[Path, dict[str, object]], settings: Settings) -> None:
    directory, _ = crm_5k
    history, _ = load_history(directory, settings, write_rejected=False)
    sc = history.stage_changes
    leads_with = {s: set(sc.loc[sc["stage"] == s, "lead_id"]) for s in ("mql", "sql")}
    n = len(history.leads)
    opps = history.opportunities
    closed = opps[opps["is_won"].notna()]
    realised = {
        "lead_to_mql": len(leads_with["mql"]) / n,
        "mql_to_sql": len(leads_with["sql"] & leads_with["mql"]) / len(leads_with["mql"]),
        "sql_to_opportunity": opps["lead_id"].nunique() / len(leads_with["sql"]),
        "opportunity_to_won": float(closed["is_won"].astype(bool).mean()),
    }
    g = settings.generator
    for key, value in realised.items():
        target = getattr(g, key)
        assert abs(value - target) <= 0.2 * target, (key, value, target)


def test_ground_truth_is_a_probability_and_predicts_what_happened(
    crm_5k: tuple[Path, dict[str, object]], settings: Settings
) -> None:
    directory, _ = crm_5k
    history, _ = load_history(directory, settings, write_rejected=False)
    truth = pd.read_parquet(directory / "ground_truth.parquet")
    assert truth[["p_sql_30d", "p_opp_90d"]].apply(lambda c: c.between(0, 1).all()).all()
    assert (truth["p_opp_90d"] <= 1).all() and truth["p_sql_30d"].notna().all()
    sc = history.stage_changes
    sql_at = sc[sc["stage"].isin(["sql", "opportunity", "customer"])].groupby("lead_id")["changed_at"].min()
    acts = history.activities.sample(60_000, random_state=0)
    acts = acts.assign(sql_at=acts["lead_id"].map(sql_at))
    acts = acts[acts["sql_at"].isna() | (acts["sql_at"] > acts["occurred_at"])]
    horizon = pd.Timedelta(days=settings.horizons.sql_days)
    acts = acts[acts["occurred_at"] + horizon <= history.cutoff]  # matured moments only
    y = (acts["sql_at"].notna() & (acts["sql_at"] <= acts["occurred_at"] + horizon)).to_numpy()
    moments = acts.assign(day=acts["occurred_at"].dt.floor("D"))[["lead_id", "day"]]
    truth["day"] = truth["day"].dt.as_unit("us")
    joined = moments.merge(truth, on=["lead_id", "day"], how="left")
    assert joined["p_sql_30d"].notna().all()
    auc = roc_auc_score(y, joined["p_sql_30d"])
    assert auc >= 0.8, auc
    assert np.isclose(joined["p_sql_30d"].mean(), y.mean(), rtol=0.35)


def test_generate_and_validate_cli(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "crm"
    result = runner.invoke(app, ["generate", "--out", str(out), "--leads", "300", "--months", "4", "--seed", "2"])
    assert result.exit_code == 0, result.output
    assert "lead_to_mql" in result.output
    result = runner.invoke(app, ["validate", str(out)])
    assert result.exit_code == 0, result.output
    assert "activities" in result.output and "ok" in result.output


#: content digests of the default generator's tables (seed 5, 400 leads, 6 months) recorded before
#: scenarios existed: the default scenario must keep drawing exactly this lead-side history. The sales
#: floor (issue 16) draws from its own stream: it adds columns (``owner``, ``actor``, ``reason``) and the
#: reps' touches, and changes what sales did with MQLs, never the accounts, the leads or their own activities.
LEAD_SIDE_DIGESTS = {
    "accounts": "50beb3b6018f2e6d",
    "activities": "e3326653f6a7bd33",
    "leads": "cba1b6f01a53359b",
}
#: the whole default history with the sales floor (recorded when it was added). Both still hold since the
#: generator draws in blocks: a CRM of at most ``BLOCK_LEADS`` leads is block 0, whose streams are the old ones.
DEFAULT_DIGESTS = {
    "accounts": "50beb3b6018f2e6d",
    "activities": "63f29c37aad89152",
    "ground_truth": "522666d40e2cb978",
    "leads": "300d65c1c437668f",
    "opportunities": "1fa66b1811ab55e8",
    "stage_changes": "19363a3275619794",
}


def _hash(frame: pd.DataFrame) -> str:
    return hashlib.sha256(pd.util.hash_pandas_object(frame.astype(str), index=False).to_numpy().tobytes()).hexdigest()[:16]


def _content_digest(directory: Path) -> dict[str, str]:
    """Digest of the table contents (not the Parquet bytes, which carry the writer's version)."""
    return {path.stem: _hash(pd.read_parquet(path)) for path in sorted(directory.glob("*.parquet"))}


def _lead_side_digest(directory: Path) -> dict[str, str]:
    """The same digest of what existed before the sales floor: the lead's side, its columns only."""
    acts = pd.read_parquet(directory / "activities.parquet")
    acts = acts[acts["actor"] == "lead"].drop(columns="actor").reset_index(drop=True)
    return {"accounts": _hash(pd.read_parquet(directory / "accounts.parquet")), "activities": _hash(acts),
            "leads": _hash(pd.read_parquet(directory / "leads.parquet").drop(columns="owner"))}


def test_default_scenario_draws_the_same_history_as_before_scenarios(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["generate", "--out", str(tmp_path / "d"), "--leads", "400", "--months", "6",
                                      "--seed", "5", "--scenario", "default"])
    assert result.exit_code == 0, result.output
    assert _lead_side_digest(tmp_path / "d") == LEAD_SIDE_DIGESTS
    assert _content_digest(tmp_path / "d") == DEFAULT_DIGESTS
    bad = CliRunner().invoke(app, ["generate", "--out", str(tmp_path / "x"), "--leads", "100", "--scenario", "nope"])
    assert bad.exit_code != 0 and "regime-shift" in bad.output


@pytest.fixture(scope="module")
def shifted(tmp_path_factory: pytest.TempPathFactory, settings: Settings) -> tuple[Path, pd.DataFrame]:
    """A regime-shift CRM and its matured activity moments with their 30-day SQL label and ground truth."""
    out = tmp_path_factory.mktemp("shift")
    generate_crm(out, n_leads=4000, months=12, seed=1, settings=settings, scenario=scenario_named("regime-shift"))
    history, report = load_history(out, settings, write_rejected=False)
    assert report.usable and all(t.rejected_rows == 0 for t in report.tables.values())
    sc = history.stage_changes
    sql_at = sc[sc["stage"].isin(["sql", "opportunity", "customer"])].groupby("lead_id")["changed_at"].min()
    acts = history.activities.assign(sql_at=lambda f: f["lead_id"].map(sql_at).astype("datetime64[us, UTC]"))
    acts = acts[acts["sql_at"].isna() | (acts["sql_at"] > acts["occurred_at"])]
    horizon = pd.Timedelta(days=settings.horizons.sql_days)
    acts = acts[acts["occurred_at"] + horizon <= history.cutoff].copy()
    acts["y"] = acts["sql_at"].notna() & (acts["sql_at"] <= acts["occurred_at"] + horizon)
    acts["day"] = acts["occurred_at"].dt.floor("D").dt.as_unit("us")
    truth = pd.read_parquet(out / "ground_truth.parquet")
    truth["day"] = truth["day"].dt.as_unit("us")
    moments = acts.merge(truth, on=["lead_id", "day"], how="left")
    moments["month"] = moments["occurred_at"].dt.tz_localize(None).dt.to_period("M")
    return out, moments


def test_regime_shift_raises_conversion_several_fold_and_keeps_an_exact_truth(
    shifted: tuple[Path, pd.DataFrame],
) -> None:
    directory, moments = shifted
    manifest = json.loads((directory / "manifest.json").read_text())
    shift = pd.Period(manifest["scenario"]["shifted_from"][:7], "M")
    by_month = moments.groupby("month")["y"].mean()
    early = moments.loc[moments["month"] < shift - 1, "y"].mean()  # horizons wholly before the shift
    late = moments.loc[moments["month"] >= shift, "y"].mean()
    assert late >= 3 * early, by_month.round(4).to_dict()
    assert (by_month[by_month.index >= shift] >= 2 * early).all(), by_month.round(4).to_dict()
    # the ground truth follows the shift: it ranks and is calibrated on the shifted months too
    after = moments[moments["month"] >= shift]
    assert after["p_sql_30d"].notna().all()
    assert roc_auc_score(after["y"], after["p_sql_30d"]) >= 0.8
    assert np.isclose(after["p_sql_30d"].mean(), after["y"].mean(), rtol=0.35)


def test_regime_shift_moves_an_account_signal_out_of_range_and_an_activity_changes_meaning(
    shifted: tuple[Path, pd.DataFrame], settings: Settings
) -> None:
    directory, moments = shifted
    cutoff = pd.Timestamp(json.loads((directory / "manifest.json").read_text())["scenario"]["shifted_from"])
    leads = pd.read_parquet(directory / "leads.parquet").merge(
        pd.read_parquet(directory / "accounts.parquet")[["account_id", "employees"]], on="account_id")
    before = leads.loc[leads["created_at"] < cutoff, "employees"]
    after = leads.loc[leads["created_at"] >= cutoff, "employees"]
    assert (after > before.max()).mean() >= 0.5, (before.max(), after.describe())
    # the changed type meant interest before the shift (its moments' true P(SQL) above the average)
    # and means less than an average activity after it
    changed = scenario_named("regime-shift").changed_type  # type: ignore[union-attr]
    pre = moments[moments["occurred_at"] < cutoff]
    post = moments[moments["occurred_at"] >= cutoff]
    lift_pre = pre.loc[pre["type"] == changed, "p_sql_30d"].mean() / pre["p_sql_30d"].mean()
    lift_post = post.loc[post["type"] == changed, "p_sql_30d"].mean() / post["p_sql_30d"].mean()
    assert lift_pre >= 1.3 and lift_post <= 0.7, (lift_pre, lift_post)


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory, settings: Settings) -> Path:
    """One small history (2,000 leads in blocks of 300: 7 blocks) in the files layout and in 1, 3 and 7 parts."""
    root = tmp_path_factory.mktemp("layouts")
    for parts in (None, 1, 3, 7):
        generate_crm(root / f"p{parts}", n_leads=2000, months=6, seed=5, settings=settings, partitions=parts,
                     block_leads=300)
    return root


def test_any_partitioning_holds_the_same_rows_in_the_same_order(layouts: Path) -> None:
    from leadscore.generate import SCHEMAS
    from leadscore.history import read_parquet_table

    assert not (layouts / "pNone" / "leads").exists() and (layouts / "pNone" / "leads.parquet").exists()
    for name in SCHEMAS:
        files = read_parquet_table(layouts / "pNone", name)
        assert files is not None and len(files) > 0
        for parts in (1, 3, 7):
            assert sorted(p.name for p in (layouts / f"p{parts}" / name).iterdir()) == [
                f"part-{k:05d}.parquet" for k in range(parts)]
            pd.testing.assert_frame_equal(read_parquet_table(layouts / f"p{parts}", name), files)
    files_manifest = json.loads((layouts / "pNone" / "manifest.json").read_text())
    manifest = json.loads((layouts / "p3" / "manifest.json").read_text())
    assert "partitioning" not in files_manifest
    assert manifest["partitioning"] == {"by": "account", "parts": 3, "blocks": 7, "block_leads": 300,
                                        "part_blocks": [[0, 3], [3, 5], [5, 7]]}
    assert manifest["realised"] == files_manifest["realised"] and manifest["sla"] == files_manifest["sla"]


def test_each_part_holds_whole_accounts_with_all_their_leads_rows(layouts: Path) -> None:
    directory = layouts / "p7"
    manifest = json.loads((directory / "manifest.json").read_text())["partitioning"]
    seen_leads: set[str] = set()
    for k in range(7):
        part = {name: pd.read_parquet(directory / name / f"part-{k:05d}.parquet")
                for name in ("accounts", "leads", "activities", "stage_changes", "opportunities", "ground_truth")}
        accounts, leads = set(part["accounts"]["account_id"]), set(part["leads"]["lead_id"])
        assert set(part["leads"]["account_id"].dropna()) <= accounts
        assert set(part["opportunities"]["account_id"].dropna()) <= accounts
        for name in ("activities", "stage_changes", "opportunities", "ground_truth"):
            assert set(part[name]["lead_id"].astype(str)) <= leads, (k, name)
        # a lead (with an account or without) sits in the block its number falls in
        first, end = manifest["part_blocks"][k]
        numbers = part["leads"]["lead_id"].str[1:].astype(int)
        assert numbers.between(first * 300, end * 300 - 1).all() and len(numbers) == min(end * 300, 2000) - first * 300
        assert part["leads"]["account_id"].isna().any() and part["leads"]["account_id"].notna().any()
        assert not leads & seen_leads
        seen_leads |= leads
    assert len(seen_leads) == 2000


def test_partitioned_history_loads_and_validates_like_the_files(layouts: Path, settings: Settings) -> None:
    files, _ = load_history(layouts / "pNone", settings, write_rejected=False)
    parts, report = load_history(layouts / "p3", settings, write_rejected=False)
    assert report.usable and all(t.rejected_rows == 0 for t in report.tables.values()), report.to_dict()
    for name in ("accounts", "leads", "activities", "stage_changes", "opportunities"):
        pd.testing.assert_frame_equal(parts.table(name), files.table(name))
    assert parts.cutoff == files.cutoff


def test_many_blocks_keep_the_funnel_calibrated(tmp_path: Path, settings: Settings) -> None:
    """Blocks after the first reuse the constants solved on block 0: the whole CRM still hits the funnel."""
    summary = generate_crm(tmp_path / "crm", n_leads=12_000, months=6, seed=2, settings=settings, block_leads=3000)
    manifest = json.loads((tmp_path / "crm" / "manifest.json").read_text())
    assert manifest["generator"]["block_leads"] == 3000 and set(manifest["calibration"]) >= {"sql_offset", "kappa"}
    assert summary["leads"] == 12_000 and summary["accounts"] == 4 * round(settings.generator.accounts_per_lead * 3000)
    for key in ("lead_to_mql", "mql_to_sql", "sql_to_opportunity", "opportunity_to_won"):
        target = getattr(settings.generator, key)
        assert abs(float(summary[key]) - target) <= 0.2 * target, (key, summary[key], target)  # type: ignore[arg-type]
    ids = pd.read_parquet(tmp_path / "crm" / "activities.parquet", columns=["activity_id"])["activity_id"]
    accounts = pd.read_parquet(tmp_path / "crm" / "accounts.parquet")
    assert ids.is_unique and accounts["account_id"].is_unique and accounts["name"].is_unique


def test_generate_cli_writes_the_parts_asked_for(tmp_path: Path) -> None:
    out = tmp_path / "crm"
    result = CliRunner().invoke(app, ["generate", "--out", str(out), "--leads", "300", "--months", "3", "--seed", "2",
                                      "--partitions", "2"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "manifest.json").read_text())["partitioning"]["parts"] == 2
    assert sorted(p.name for p in (out / "activities").iterdir()) == ["part-00000.parquet", "part-00001.parquet"]
    result = CliRunner().invoke(app, ["validate", str(out)])
    assert result.exit_code == 0, result.output
    # regenerating in the files layout replaces the parts (two layouts never mix in one directory)
    assert CliRunner().invoke(app, ["generate", "--out", str(out), "--leads", "300", "--months", "3"]).exit_code == 0
    assert not (out / "activities").exists() and (out / "activities.parquet").exists()
