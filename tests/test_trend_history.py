"""Trend and changes (the one rule of ``training.trend``) and the paged score history route.

The rule is checked on plain values; the API is checked on scores appended to the audit with chosen
P(SQL) and reasons (so the expected trend is known), and on real scores of posted activities (each
answer's trend and changes follow from the answers before it).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from leadscore.config import Settings
from leadscore.serving.app import create_app
from leadscore.serving.state import ServingState
from leadscore.serving.store import StoredScore
from leadscore.training.trend import DEAD_BAND, PastScore, annotate, changes, slope, trend
from tests.api_support import AUTH, make_state
from tests.conftest import SmallModel


def _r(*pos: str, neg: tuple[str, ...] = ()) -> dict[str, list[str]]:
    return {"positive": list(pos), "negative": list(neg)}


def test_slope_is_least_squares_per_score() -> None:
    assert slope([0.1]) == 0.0
    assert slope([0.1, 0.3]) == pytest.approx(0.2)
    assert slope([0.1, 0.2, 0.3, 0.4]) == pytest.approx(0.1)
    assert slope([0.5, 0.1, 0.5]) == pytest.approx(0.0)


def test_trend_rule_new_steady_improving_declining_and_window() -> None:
    past = [PastScore(p, _r()) for p in (0.30, 0.30, 0.30, 0.30)]  # newest first
    assert trend(0.5, []) == "new"
    assert trend(0.30 + DEAD_BAND * 0.9, past[:1]) == "steady"
    assert trend(0.30 + DEAD_BAND * 1.1, past[:1]) == "improving"
    assert trend(0.30 - DEAD_BAND * 1.1, past[:1]) == "declining"
    # only the last 5 scores count: an old low score beyond the window does not make it improving
    long = [PastScore(0.30, _r())] * 4 + [PastScore(0.0, _r())] * 10
    assert trend(0.30, long) == "steady"
    # newest first: 0.1 (newest) after 0.5, 0.5, 0.5 is a decline
    assert trend(0.1, [PastScore(0.1, _r()), PastScore(0.5, _r()), PastScore(0.5, _r())]) == "declining"


def test_changes_lists_reasons_gained_then_lost_against_the_previous_score_only() -> None:
    prev = [PastScore(0.2, _r("Visited pricing 3 times this week", neg=("No company known",))),
            PastScore(0.1, _r("Something older"))]
    now = _r("Asked for a demo today", "Visited pricing 3 times this week")
    assert changes(now, prev) == ["New: Asked for a demo today", "Gone: No company known"]
    assert changes(now, []) == []
    assert annotate(0.2, now, []) == ("new", [])


@pytest.fixture()
def state(small_model: SmallModel, settings: Settings, tmp_path: Path) -> Iterator[ServingState]:
    st = make_state(settings, small_model.bundle_dir, tmp_path / "events.db")
    yield st
    st.store.close()


@pytest.fixture()
def client(state: ServingState) -> Iterator[TestClient]:
    with TestClient(create_app(state)) as c:
        yield c


def _append(st: ServingState, lead: str, day: int, p: float, reasons: dict[str, list[str]]) -> None:
    at = pd.Timestamp(f"2026-10-{day:02d}T09:00:00Z")
    with st.store.begin() as conn:
        st.store.upsert_lead(conn, lead, {}, at)
        st.store.append_score(conn, StoredScore(lead_id=lead, scored_at=at, computed_at=at, p_sql=p, p_opportunity=p / 2,
                                                stage="lead", previous_stage=None, model_version="1", reasons=reasons,
                                                stage_since=at))


def test_history_route_pages_by_cursor_with_trend_independent_of_the_page(client: TestClient, state: ServingState) -> None:
    ps = [0.10, 0.20, 0.30, 0.30, 0.30, 0.30, 0.30, 0.10]
    for day, p in enumerate(ps, start=1):
        _append(state, "lead-h", day, p, _r(f"reason {day}") if day % 2 else _r("steady reason"))
    _append(state, "lead-h", 8, 0.05, _r("refreshed"))  # day 8 refreshed: its newest row counts

    whole = client.get("/leads/lead-h/scores", params={"limit": 100}, headers=AUTH).json()
    assert whole["next_cursor"] is None
    got = [(s["scored_at"][:10], s["p_sql"], s["trend"]) for s in whole["scores"]]
    assert got[:3] == [("2026-10-08", 0.05, "declining"), ("2026-10-08", 0.10, "declining"),
                       ("2026-10-07", 0.30, "steady")]
    assert got[-3:] == [("2026-10-03", 0.30, "improving"), ("2026-10-02", 0.20, "improving"),
                        ("2026-10-01", 0.10, "new")]
    assert whole["scores"][-1]["changes"] == []
    assert whole["scores"][-2]["changes"] == ["New: steady reason", "Gone: reason 1"]

    pages: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        page = client.get("/leads/lead-h/scores", params=params, headers=AUTH)
        assert page.status_code == 200, page.text
        pages += page.json()["scores"]
        if page.json()["next_cursor"] is None:
            break
        params["cursor"] = page.json()["next_cursor"]
    assert pages == whole["scores"]
    # GET /leads/{id} carries the same annotated scores
    assert client.get("/leads/lead-h", headers=AUTH).json()["history"] == whole["scores"]

    recent = client.get("/leads/lead-h/scores", params={"since": "2026-10-07T00:00:00Z"}, headers=AUTH).json()
    assert recent["scores"] == whole["scores"][:3]


def test_one_lead_previous_scores_match_the_general_form(state: ServingState) -> None:
    """``EventStore.previous_scores`` (what each ``POST /activities`` answer reads) against the general
    window-function form (batch scoring, ``serving.trail.previous_scores``): newest row per moment, strictly
    before the cut, the last n moments newest first; on moments refreshed twice and at every cut."""
    from leadscore.serving.trail import PREVIOUS, previous_scores

    for day, p in enumerate([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], start=1):
        _append(state, "lead-p", day, p, _r(f"reason {day}"))
    _append(state, "lead-p", 3, 0.33, _r("refreshed 3"))
    _append(state, "lead-p", 3, 0.34, _r("refreshed 3 again"))
    _append(state, "lead-p", 6, 0.66, _r("refreshed 6"))
    _append(state, "lead-q", 5, 0.9, _r("another lead"))
    with state.store.read() as conn:
        for day in range(1, 9):
            cut = pd.Timestamp(f"2026-10-{day:02d}T09:00:00Z")
            general = previous_scores(conn, ["lead-p"], cut).get("lead-p", [])
            one = [PastScore(float(p), json.loads(r)) for p, r in state.store.previous_scores(conn, "lead-p", cut,
                                                                                                PREVIOUS)]
            assert one == general, day
        at_7 = state.store.previous_scores(conn, "lead-p", pd.Timestamp("2026-10-07T09:00:00Z"), PREVIOUS)
    assert [float(p) for p, _ in at_7] == [0.66, 0.5, 0.4, 0.34][:PREVIOUS]


def test_history_route_errors_name_the_field(client: TestClient, state: ServingState) -> None:
    _append(state, "lead-e", 1, 0.1, _r())
    bad = client.get("/leads/lead-e/scores", params={"cursor": "99999999999999999999-1"}, headers=AUTH)
    assert (bad.status_code, bad.json()["field"]) == (422, "cursor")
    bad = client.get("/leads/lead-e/scores", params={"since": "not a time"}, headers=AUTH)
    assert (bad.status_code, bad.json()["field"]) == (422, "since")
    missing = client.get("/leads/nobody/scores", headers=AUTH)
    assert (missing.status_code, missing.json()["field"]) == (404, "lead_id")
    assert client.get("/leads/lead-e/scores").status_code == 401
    assert "/leads/{lead_id}/scores" in client.get("/openapi.json", headers=AUTH).json()["paths"]


def test_posted_activities_answer_trend_and_changes_from_the_previous_answers(client: TestClient,
                                                                              state: ServingState) -> None:
    answers: list[dict[str, Any]] = []
    for i, typ in enumerate(("page_view", "pricing_page_view", "demo_request", "meeting_booked")):
        act = {"activity_id": f"t-{i}", "lead_id": "lead-t", "occurred_at": f"2026-10-0{i + 1}T10:00:00Z", "type": typ}
        r = client.post("/activities", json=act, headers=AUTH)
        assert r.status_code == 200, r.text
        answers.append(r.json()["scores"][0])
    assert (answers[0]["trend"], answers[0]["changes"]) == ("new", [])
    for i in range(1, len(answers)):
        previous = [PastScore(a["p_sql"], a["reasons"]) for a in reversed(answers[:i])]
        assert (answers[i]["trend"], answers[i]["changes"]) == annotate(answers[i]["p_sql"], answers[i]["reasons"], previous)
    # POST /score reads the same trail for a stored lead (stateless: it appends nothing)
    req = {"lead": {"lead_id": "lead-t"}, "activities": [{"occurred_at": "2026-10-09T10:00:00Z", "type": "page_view"}]}
    body = client.post("/score", json=req, headers=AUTH).json()
    previous = [PastScore(a["p_sql"], a["reasons"]) for a in reversed(answers)]
    assert (body["trend"], body["changes"]) == annotate(body["p_sql"], body["reasons"], previous)
    assert len(client.get("/leads/lead-t", headers=AUTH).json()["history"]) == 4


def test_scores_export_carries_the_routes_trend_and_filters(client: TestClient, state: ServingState,
                                                             tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from leadscore.cli import app
    from leadscore.training.score_files import read_scores

    for day, p in enumerate((0.1, 0.2, 0.4, 0.4), start=1):
        _append(state, "lead-x", day, p, _r(f"reason {day}"))
    _append(state, "lead-y", 2, 0.3, _r("other"))
    url = str(state.store.engine.url)
    out = tmp_path / "scores.csv"
    res = CliRunner().invoke(app, ["scores", "export", "--store", url, "--out", str(out)])
    assert res.exit_code == 0, res.output
    rows = read_scores(out)
    assert list(rows["lead_id"]) == ["lead-x"] * 4 + ["lead-y"]
    route = client.get("/leads/lead-x/scores", headers=AUTH).json()["scores"][::-1]
    assert list(rows["trend"][:4]) == [s["trend"] for s in route] == ["new", "improving", "improving", "improving"]
    assert [json.loads(c) for c in rows["changes"][:4]] == [s["changes"] for s in route]

    since = tmp_path / "since.parquet"
    res = CliRunner().invoke(app, ["scores", "export", "--store", url, "--since", "2026-10-03", "--lead", "lead-x",
                                   "--out", str(since)])
    assert res.exit_code == 0, res.output
    kept = pd.read_parquet(since)
    assert [str(t)[:10] for t in kept["scored_at"]] == ["2026-10-03", "2026-10-04"]
    assert list(kept["trend"]) == [s["trend"] for s in route[2:]]  # still read from the scores before --since
