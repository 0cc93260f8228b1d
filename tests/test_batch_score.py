"""``leadscore score`` equals the service: ``POST /score`` in process, and the stored-lead path.

``POST /score`` carries one lead, its account and its activities, nothing else; so the first test scores
a CRM that holds exactly that (each lead alone at a copy of its account, no stage changes or
opportunities) and compares every open lead with the API's answer. The second scores the full CRM
(colleagues, stage changes, opportunities, hysteresis from the current stage) and compares with the
service scoring the same leads from its event store.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from leadscore.config import Settings
from leadscore.history import CRMHistory, load_history
from leadscore.serving.app import create_app
from leadscore.serving.schemas import AccountProperties, ScoreActivity, ScoreLead
from leadscore.serving.state import ServingState
from leadscore.training.batch_score import iter_scores
from leadscore.training.score_files import read_scores
from tests.api_support import AUTH, make_state
from tests.conftest import SmallModel

TOL = 1e-9


@pytest.fixture(scope="module")
def history(small_model: SmallModel, settings: Settings) -> CRMHistory:
    return load_history(small_model.crm_dir, settings, write_rejected=False)[0]


@pytest.fixture()
def state(small_model: SmallModel, settings: Settings, tmp_path: Path) -> Iterator[ServingState]:
    st = make_state(settings, small_model.bundle_dir, tmp_path / "events.db")
    yield st
    st.store.close()


def _solo(history: CRMHistory) -> CRMHistory:
    """Each lead alone at its own copy of its account; no stage changes, no opportunities."""
    leads = history.leads.copy()
    has = leads["account_id"].notna()
    acc = history.accounts.set_index("account_id")
    copies = acc.loc[leads.loc[has, "account_id"]].reset_index()
    copies["account_id"] = (leads.loc[has, "account_id"] + "~" + leads.loc[has, "lead_id"]).to_numpy()
    leads.loc[has, "account_id"] = copies["account_id"].to_numpy()
    return replace(history, accounts=copies.astype(history.accounts.dtypes.to_dict()), leads=leads,
                   stage_changes=history.stage_changes.iloc[:0], opportunities=history.opportunities.iloc[:0])


def _plain(row: pd.Series, fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in fields:
        if name not in row.index:
            continue
        v = row[name]
        if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NaT:
            continue
        if isinstance(v, pd.Timestamp):
            v = v.isoformat()
        elif hasattr(v, "item"):
            v = v.item()
        if name == "properties" and isinstance(v, str):
            v = json.loads(v)
        out[name] = v
    return out


def _request(h: CRMHistory, lead_id: str, as_of: pd.Timestamp, previous: str | None) -> dict[str, Any]:
    lead = h.leads.set_index("lead_id").loc[lead_id]
    body: dict[str, Any] = {"lead": {"lead_id": lead_id, **_plain(lead, ScoreLead.model_fields)}, "as_of": as_of.isoformat(),
                            "previous_stage": previous}
    if isinstance(lead["account_id"], str):
        acc = h.accounts.set_index("account_id").loc[lead["account_id"]]
        body["account"] = {"account_id": lead["account_id"], **_plain(acc, AccountProperties.model_fields)}
    acts = h.activities[h.activities["lead_id"] == lead_id]
    body["activities"] = [_plain(r, ScoreActivity.model_fields) for _, r in acts.iterrows()]
    return body


def _same(batch: pd.Series, api: dict[str, Any]) -> None:
    assert abs(batch["p_sql"] - api["p_sql"]) <= TOL, (batch["lead_id"], batch["p_sql"], api["p_sql"])
    assert abs(batch["p_opportunity"] - api["p_opportunity"]) <= TOL
    assert batch["stage"] == api["stage"] and batch["previous_stage"] == api["previous_stage"]
    assert json.loads(batch["reasons_positive"]) == api["reasons"]["positive"]
    assert json.loads(batch["reasons_negative"]) == api["reasons"]["negative"]
    assert batch["model_version"] == api["model_version"]
    assert pd.Timestamp(api["scored_at"]) == batch["scored_at"]
    assert batch["band"] == api["band"]  # the grid: same contributions, same cut points


def test_every_open_lead_equals_post_score(history: CRMHistory, state: ServingState, settings: Settings) -> None:
    solo = _solo(history)
    as_of = pd.Timestamp(history.cutoff) - pd.Timedelta(days=10)
    scores = pd.concat([f for f, _ in iter_scores(solo, state.scorer, settings, as_of, chunk_size=300)],
                       ignore_index=True)
    created = pd.to_datetime(solo.leads["created_at"], utc=True)
    assert sorted(scores["lead_id"]) == sorted(solo.leads.loc[created <= as_of, "lead_id"])  # no stage: all open
    with TestClient(create_app(state)) as client:
        for _, row in scores.iterrows():
            r = client.post("/score", json=_request(solo, row["lead_id"], as_of, row["previous_stage"]), headers=AUTH)
            assert r.status_code == 200, r.text
            _same(row, r.json())


def test_full_crm_equals_the_service_scoring_its_stored_leads(
    history: CRMHistory, state: ServingState, settings: Settings, small_model: SmallModel, tmp_path: Path
) -> None:
    """Colleagues, stage changes and opportunities: the CLI's file equals the service's stored-lead score,
    with hysteresis (and recycling) from the stage each lead holds at ``--at``."""
    from leadscore.cli import app

    at = pd.Timestamp(history.cutoff) - pd.Timedelta(days=20)
    out = tmp_path / "scores.parquet"
    res = CliRunner().invoke(app, ["score", "--crm", str(small_model.crm_dir), "--at", at.isoformat(),
                                   "--bundle", str(small_model.bundle_dir), "--out", str(out), "--chunk-size", "250"])
    assert res.exit_code == 0, res.output
    scores = read_scores(out)
    csv = tmp_path / "scores.csv"
    assert CliRunner().invoke(app, ["score", "--crm", str(small_model.crm_dir), "--at", at.isoformat(), "--bundle",
                                    str(small_model.bundle_dir), "--out", str(csv)]).exit_code == 0
    pd.testing.assert_frame_equal(read_scores(csv), scores, check_dtype=False)
    assert scores["lead_id"].is_unique and len(scores) > 500
    assert not scores["previous_stage"].isin(["customer", "disqualified"]).any()
    staged = scores[scores["previous_stage"].notna()]
    assert staged["previous_stage"].nunique() >= 2
    state.store.import_history(history)
    sample = pd.concat([staged.head(40), scores[scores["previous_stage"].isna()].head(10),
                        scores[scores["stage"] != scores["previous_stage"].fillna("lead")].head(10)])
    with state.store.read() as conn:
        for _, row in sample.iterrows():
            result, _ = state.score_stored(conn, row["lead_id"], at)
            api = {"p_sql": result.p_sql, "p_opportunity": result.p_opportunity, "stage": result.stage,
                   "previous_stage": result.previous_stage, "reasons": result.reasons,
                   "model_version": result.model_version, "scored_at": result.scored_at, "band": result.band}
            _same(row, api)


def test_batch_trend_and_changes_read_the_service_trail_like_post_score(
    history: CRMHistory, state: ServingState, settings: Settings
) -> None:
    """Leads the service scored before ``as_of`` get the trend and changes ``POST /score`` answers for them."""
    from leadscore.serving.store import StoredScore

    solo = _solo(history)
    as_of = pd.Timestamp(history.cutoff) - pd.Timedelta(days=10)
    first = next(iter_scores(solo, state.scorer, settings, as_of, chunk_size=300))[0].head(6)
    for k, (_, row) in enumerate(first.iterrows()):  # 0..2 previous scores each, high then low, one reason kept
        kept = json.loads(row["reasons_positive"])[:1]
        for d, p in enumerate((0.9, 0.01)[: k % 3]):
            at = as_of - pd.Timedelta(days=5 - d)
            with state.store.begin() as conn:
                state.store.upsert_lead(conn, row["lead_id"], {}, at)
                state.store.append_score(conn, StoredScore(
                    lead_id=row["lead_id"], scored_at=at, computed_at=at, p_sql=p, p_opportunity=0.0, stage="lead",
                    previous_stage=None, model_version="0", reasons={"positive": [*kept, "Gone soon"], "negative": []},
                    stage_since=at))
    ids = set(first["lead_id"])
    scores = pd.concat([f[f["lead_id"].isin(ids)] for f, _ in
                        iter_scores(solo, state.scorer, settings, as_of, chunk_size=300, trail=state.store)])
    assert scores["trend"].nunique() >= 2 and (scores["trend"] == "new").sum() == 2
    with TestClient(create_app(state)) as client:
        for _, row in scores.iterrows():
            api = client.post("/score", json=_request(solo, row["lead_id"], as_of, row["previous_stage"]),
                              headers=AUTH).json()
            _same(row, api)
            assert (row["trend"], json.loads(row["changes"])) == (api["trend"], api["changes"])
            if row["trend"] != "new":
                assert "Gone: Gone soon" in api["changes"]


@pytest.mark.parametrize("solo", [False, True])
def test_coded_features_score_as_the_text_features(history: CRMHistory, state: ServingState, settings: Settings,
                                                   solo: bool) -> None:
    """``leadscore score`` reads its string features as categoricals over the run's dictionaries: the same
    values as the ``str`` columns every other consumer gets, and the same scores to the bit (reasons, stages,
    bands; a CRM without stage changes has no current stage at all: its previous stages stay None)."""
    from leadscore.features.engine import compute_features, prepare
    from leadscore.training.batch_score import CLOSED_STAGES, candidate_leads, score_frame

    h = _solo(history) if solo else history
    as_of = pd.Timestamp(h.cutoff) - pd.Timedelta(days=10)
    ids, _ = candidate_leads(h, as_of)
    moments = pd.DataFrame({"lead_id": ids, "as_of": pd.Series([as_of] * len(ids), dtype="datetime64[us, UTC]")})
    prep = prepare(h, settings)
    text = compute_features(h, moments, settings, prep=prep)
    coded = compute_features(h, moments, settings, prep=prep, coded=True)
    cats = [c for c in coded.columns if isinstance(coded[c].dtype, pd.CategoricalDtype)]
    assert cats and all(text[c].dtype == "str" for c in cats)
    assert list(coded.columns) == list(text.columns)
    pd.testing.assert_frame_equal(coded.astype({c: text[c].dtype for c in cats}), text, check_exact=True)
    open_rows = ~text["current_stage"].astype(object).isin(CLOSED_STAGES).to_numpy()
    assert text.loc[open_rows, "current_stage"].isna().all() == solo
    for reasons in (True, False):
        want = score_frame(state.scorer, text.loc[open_rows].reset_index(drop=True), reasons)
        got = score_frame(state.scorer, coded.loc[open_rows].reset_index(drop=True), reasons)
        pd.testing.assert_frame_equal(got, want, check_exact=True)


def test_reasons_walked_in_the_pass_equal_the_separate_walk(history: CRMHistory, state: ServingState,
                                                            settings: Settings) -> None:
    """``score_frame`` walks each row's reasons in the scoring pass as its contributions are made: the same
    sentences as the walk over the finished contributions (:func:`training.reason_batch.batch_reasons`),
    from an empty sentence table (every row misses and is walked again) and from a full one."""
    from leadscore.features.engine import compute_features, prepare
    from leadscore.training.batch_explain import explain_block
    from leadscore.training.batch_score import REASONS_K, candidate_leads, score_frame
    from leadscore.training.reason_batch import batch_reasons, json_lists

    as_of = pd.Timestamp(history.cutoff) - pd.Timedelta(days=10)
    ids, _ = candidate_leads(history, as_of)
    moments = pd.DataFrame({"lead_id": ids, "as_of": pd.Series([as_of] * len(ids), dtype="datetime64[us, UTC]")})
    feats = compute_features(history, moments, settings, prep=prepare(history, settings), coded=True)
    bundle = state.scorer.bundle
    plan = bundle._reason_plan()
    for fresh in (True, False):
        if fresh:
            plan.memo.pop("sentences", None)
        got = score_frame(state.scorer, feats)
        _, contrib, block, _ = explain_block(bundle, feats, "sql", row_major=False)
        pos, neg, texts, _ = batch_reasons(plan, feats, contrib, REASONS_K, block=block)
        assert got["reasons_positive"].tolist() == list(json_lists(pos, texts))
        assert got["reasons_negative"].tolist() == list(json_lists(neg, texts))
        assert (got["reasons_positive"] != "[]").mean() > 0.5
