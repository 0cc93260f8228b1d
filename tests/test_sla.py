"""SLA thresholds and stages: policies are met on the months they were fitted on; hysteresis holds.

Unit tests run on synthetic scored frames whose probabilities are calibrated by construction (labels
are drawn from them), so "the policy is met" is a property of the fitting code, not of a model.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import typer
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from leadscore.config import Settings
from leadscore.training.bundle import StagePolicy
from leadscore.training.config import MQLPolicy
from leadscore.training.replay import Records, Replay, ScoredFrameError
from leadscore.training.sla import fit_stage_policy
from leadscore.training.sla_cli import what_if_policy


def synthetic_scored(
    n_leads: int = 3000, seed: int = 0, start: str = "2026-05-01", months: int = 3, rule_noise: float = 25.0
) -> pd.DataFrame:
    """Scored moments of ``n_leads`` leads over ``months`` months; P(SQL) calibrated, rule score noisy.

    Each lead has a latent quality q; its P(SQL) grows with each moment (interest builds up) and its
    labels are Bernoulli draws from the probabilities. The rule score sees q through noise, so the
    model ranks better than the rule. Moments in the last 20 days without a conversion are censored.
    """
    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp(start, tz="UTC")
    span = (t0 + pd.DateOffset(months=months) - t0).total_seconds()
    q = rng.beta(1.0, 6.0, n_leads)
    k = rng.integers(1, 9, n_leads)
    lead = np.repeat(np.arange(n_leads), k)
    j = np.concatenate([np.arange(x) for x in k])
    secs = rng.uniform(0, span, len(lead))
    secs = pd.Series(secs).groupby(lead).transform(np.sort).to_numpy()
    p = np.clip(q[lead] * (0.6 + 0.15 * j) + rng.normal(0, 0.02, len(lead)), 0, 1)
    p_opp = np.clip(p * 0.6, 0, 1)
    as_of = t0 + pd.to_timedelta(secs, unit="s")
    created = pd.Series(secs).groupby(lead).transform("min").to_numpy() / 86400 - rng.uniform(0, 30, n_leads)[lead]
    frame = pd.DataFrame(
        {
            "lead_id": [f"L{i:05d}" for i in lead],
            "as_of": as_of,
            "p_sql": p,
            "p_opportunity": p_opp,
            "rule_score": 100 * q[lead] + rng.normal(0, rule_noise, len(lead)) + 3 * j,
            "y_sql": (rng.random(len(lead)) < p).astype(float),
            "y_opp": (rng.random(len(lead)) < p_opp).astype(float),
            "source": np.array(["web", "event", "paid"])[rng.integers(0, 3, n_leads)][lead],
            "industry": np.array(["saas", "retail"])[rng.integers(0, 2, n_leads)][lead],
            "employee_band": np.array(["1-10", "11-200", "200+"])[rng.integers(0, 3, n_leads)][lead],
            "days_since_created": secs / 86400 - created,
        }
    )
    late = frame["as_of"] > frame["as_of"].max() - pd.Timedelta(days=20)
    frame.loc[late & (frame["y_sql"] == 0), "y_sql"] = np.nan
    frame.loc[late & (frame["y_opp"] == 0), "y_opp"] = np.nan
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # order must not matter


def naive_first_crossings(
    frame: pd.DataFrame, column: str, threshold: float, window_start: pd.Timestamp | None = None
) -> pd.DataFrame:
    """The obvious implementation the replay machinery must agree with: each lead's first moment >= t,
    kept if it falls in the window (moments before ``window_start`` only tell who had already crossed).

    Labels come back as used for rates: after the window's last observable negative, even positives are
    censored.
    """
    frame = frame.copy()
    in_window = frame["as_of"] >= window_start if window_start is not None else pd.Series(True, index=frame.index)
    for label in ("y_sql", "y_opp"):
        last_negative = frame.loc[in_window & (frame[label] == 0), "as_of"].max()
        frame.loc[frame["as_of"] > last_negative, label] = np.nan
    hit = frame[frame[column] >= threshold].sort_values(["lead_id", "as_of"], kind="stable")
    first = hit.groupby("lead_id", sort=False).head(1)
    return first if window_start is None else first[first["as_of"] >= window_start]


def second_month(frame: pd.DataFrame) -> pd.Timestamp:
    """Where the window starts with ``sla.warmup_months: 1``: the first day of the frame's second month."""
    first = frame["as_of"].min()
    return pd.Timestamp(year=first.year, month=first.month, day=1, tz="UTC") + pd.DateOffset(months=1)


def for_synthetic(settings: Settings, bootstrap_samples: int = 100) -> Settings:
    """The repository settings with the rule threshold on the synthetic rule score's scale (0-100)."""
    return settings.model_copy(
        update={
            "rules": settings.rules.model_copy(update={"mql_threshold": 50.0}),
            "training": settings.training.model_copy(update={"bootstrap_samples": bootstrap_samples}),
        }
    )


@pytest.fixture(scope="module")
def sla_settings(settings: Settings) -> Settings:
    return for_synthetic(settings)


@pytest.fixture(scope="module")
def calibration_frame() -> pd.DataFrame:
    return synthetic_scored(seed=0)


def _monthly(frame: pd.DataFrame, column: str, threshold: float) -> pd.Series:
    first = naive_first_crossings(frame, column, threshold, second_month(frame))
    return first["as_of"].dt.strftime("%Y-%m").value_counts()


# ------------------------------------------------------------------ replay machinery


@hsettings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 6), st.integers(0, 200), st.floats(0, 1, allow_nan=False)), min_size=1, max_size=60
    ),
    st.floats(0, 1, allow_nan=False),
)
def test_records_agree_with_naive_first_crossing(moments: list[tuple[int, int, float]], threshold: float) -> None:
    frame = pd.DataFrame(moments, columns=["lead", "day", "p_sql"])
    frame = frame.drop_duplicates(["lead", "day"])
    frame = pd.DataFrame(
        {
            "lead_id": "L" + frame["lead"].astype(str),
            "as_of": pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(frame["day"], unit="D"),
            "p_sql": frame["p_sql"],
            "p_opportunity": frame["p_sql"] / 2,
            "rule_score": frame["p_sql"] * 100,
            "y_sql": (frame["p_sql"] > 0.5).astype(float),
            "y_opp": 0.0,
        }
    )
    replay = Replay(frame)
    rows = replay.records("p_sql").at(threshold)
    got = replay.frame.iloc[rows][["lead_id", "as_of"]].sort_values("lead_id").reset_index(drop=True)
    want = naive_first_crossings(frame, "p_sql", threshold)[["lead_id", "as_of"]]
    want = want.sort_values("lead_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)
    curve = replay.curves("p_sql", np.array([threshold]))
    assert curve["mqls"][0] == len(want)
    monthly = replay.monthly_counts("p_sql", np.array([threshold]))[:, 0]
    assert monthly.sum() == len(want)


@hsettings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 5), st.integers(0, 120), st.floats(0, 1, allow_nan=False)), min_size=1, max_size=50
    ),
    st.floats(0, 1, allow_nan=False),
    st.integers(1, 119),
)
def test_warmup_moments_only_mark_leads_already_mql(
    moments: list[tuple[int, int, float]], threshold: float, split_day: int
) -> None:
    raw = pd.DataFrame(moments, columns=["lead", "day", "p_sql"]).drop_duplicates(["lead", "day"])
    frame = pd.DataFrame(
        {
            "lead_id": "L" + raw["lead"].astype(str),
            "as_of": pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(raw["day"], unit="D"),
            "p_sql": raw["p_sql"],
            "p_opportunity": raw["p_sql"] / 2,
            "rule_score": raw["p_sql"] * 100,
            "y_sql": (raw["p_sql"] > 0.7).astype(float),
            "y_opp": 0.0,
        }
    )
    start = pd.Timestamp("2026-01-01", tz="UTC") + pd.Timedelta(days=split_day)
    window, early = frame[frame["as_of"] >= start], frame[frame["as_of"] < start]
    if window.empty:
        return
    replay = Replay(window, warmup=early)
    got = replay.frame.iloc[replay.window(replay.at("p_sql", threshold))]["lead_id"]
    want = naive_first_crossings(frame, "p_sql", threshold, start)["lead_id"]
    assert sorted(got) == sorted(want)
    out = replay.outcomes(replay.at("p_sql", threshold))
    assert out["mqls"] == len(want)
    # Recall: an eventual SQL flagged during the warm-up was handed to sales, so it counts as found.
    ever = set(window.loc[window["y_sql"] == 1, "lead_id"])
    flagged = set(frame.loc[frame["p_sql"] >= threshold, "lead_id"])
    if ever:
        assert out["sql_recall"] == pytest.approx(len(ever & flagged) / len(ever))
    assert replay.curves("p_sql", np.array([threshold]))["mqls"][0] == len(want)


def test_records_curve_matches_point_replay(calibration_frame: pd.DataFrame) -> None:
    replay = Replay(calibration_frame)
    grid = np.quantile(calibration_frame["p_sql"], [0.3, 0.6, 0.9, 0.99])
    curves = replay.curves("p_sql", grid)
    for i, t in enumerate(grid):
        out = replay.outcomes(replay.records("p_sql").at(t))
        assert curves["mqls"][i] == out["mqls"] == len(naive_first_crossings(calibration_frame, "p_sql", t))
        assert curves["mql_to_sql_rate"][i] == pytest.approx(out["mql_to_sql_rate"])
        assert curves["sql_recall"][i] == pytest.approx(out["sql_recall"])


def test_volume_threshold_gives_the_volume(calibration_frame: pd.DataFrame) -> None:
    replay = Replay(calibration_frame)
    for volume in (1, 250, 900):
        t = replay.volume_threshold("rule_score", volume)
        assert len(replay.records("rule_score").at(t)) == volume  # continuous scores: no ties


# ------------------------------------------------------------------ policies


def test_capacity_is_respected_and_binding(sla_settings: Settings, calibration_frame: pd.DataFrame) -> None:
    settings = sla_settings
    policy = fit_stage_policy(calibration_frame, settings, override=MQLPolicy(kind="capacity", capacity_per_month=250))
    monthly = _monthly(calibration_frame, "p_sql", policy.mql_threshold)
    assert monthly.max() <= 250
    # The lowest such threshold: the next lower score at which volumes change breaks the capacity.
    cands = Replay(calibration_frame).records("p_sql").candidates()
    lower = cands[cands < policy.mql_threshold][-1]
    assert _monthly(calibration_frame, "p_sql", lower).max() > 250
    exp = policy.expected["mql"]
    assert policy.expected["months"] == ["2026-06", "2026-07"]  # May is the warm-up
    assert exp["mqls_per_month"]["value"] == pytest.approx(monthly.sum() / 2, abs=1e-3)
    assert {m: c["value"] for m, c in exp["by_month"].items()} == {m: float(v) for m, v in monthly.items()}
    assert policy.policy["mql"]["kind"] == "capacity" and policy.policy["mql"]["met"]
    assert exp["mqls_per_month"]["ci_low"] <= exp["mqls_per_month"]["value"] <= exp["mqls_per_month"]["ci_high"]


def test_target_rate_is_met_within_its_ci(sla_settings: Settings, calibration_frame: pd.DataFrame) -> None:
    settings = sla_settings
    target = 0.3
    policy = fit_stage_policy(calibration_frame, settings, override=MQLPolicy(kind="target_rate", target_rate=target))
    first = naive_first_crossings(calibration_frame, "p_sql", policy.mql_threshold, second_month(calibration_frame))
    realised = first["y_sql"].dropna().mean()
    rate = policy.expected["mql"]["mql_to_sql_rate"]
    assert rate["value"] == pytest.approx(realised, abs=1e-4)
    assert realised >= target
    assert rate["ci_low"] <= target <= rate["ci_high"]  # the lowest threshold that reaches it: just above it
    assert policy.policy["mql"]["met"]


def test_unreachable_target_rate_is_reported_not_met(sla_settings: Settings, calibration_frame: pd.DataFrame) -> None:
    settings = sla_settings
    policy = fit_stage_policy(calibration_frame, settings, override=MQLPolicy(kind="target_rate", target_rate=0.99))
    assert not policy.policy["mql"]["met"]
    assert "not reachable" in policy.policy["mql"]["note"]
    assert policy.mql_threshold == 0.99  # falls back to the calibrated probability, never to "everyone"


def test_constant_model_does_not_recommend_everyone(sla_settings: Settings, calibration_frame: pd.DataFrame) -> None:
    flat = calibration_frame.assign(p_opportunity=0.03)  # an uninformative opportunity model
    policy = fit_stage_policy(flat, sla_settings)
    assert not policy.policy["sql"]["met"]
    assert policy.sql_threshold == sla_settings.sla.sql_recommend_p_opportunity
    assert policy.stage(0.0, 0.03, None) == "lead"


def test_expected_value_threshold_maximises_net_value(sla_settings: Settings, calibration_frame: pd.DataFrame) -> None:
    settings = sla_settings
    value, cost = 1000.0, 150.0
    policy = fit_stage_policy(
        calibration_frame, settings, override=MQLPolicy(kind="expected_value", value_of_sql=value, cost_of_follow_up=cost)
    )

    def net(t: float) -> float:
        first = naive_first_crossings(calibration_frame, "p_sql", t, second_month(calibration_frame))
        return len(first) * (value * first["y_sql"].dropna().mean() - cost)

    best = net(policy.mql_threshold)
    assert best > 0
    for t in np.quantile(calibration_frame["p_sql"], np.linspace(0.05, 0.97, 25)):
        assert net(float(t)) <= best + 1e-6
    assert policy.expected["net_value_per_month"] == pytest.approx(best / 2, rel=1e-3)


def test_sql_threshold_meets_its_opportunity_rate(sla_settings: Settings, calibration_frame: pd.DataFrame) -> None:
    settings = sla_settings
    policy = fit_stage_policy(calibration_frame, settings)
    first = naive_first_crossings(calibration_frame, "p_opportunity", policy.sql_threshold, second_month(calibration_frame))
    assert first["y_opp"].dropna().mean() >= settings.sla.sql_recommend_p_opportunity
    fixed = settings.model_copy(update={"sla": settings.sla.model_copy(update={"sql_policy_kind": "probability"})})
    assert fit_stage_policy(calibration_frame, fixed).sql_threshold == settings.sla.sql_recommend_p_opportunity


def test_policy_round_trips_as_json(sla_settings: Settings, calibration_frame: pd.DataFrame) -> None:
    settings = sla_settings
    policy = fit_stage_policy(calibration_frame, settings)
    again = StagePolicy.model_validate_json(policy.model_dump_json())
    assert again == policy
    assert policy.rule_mql_threshold == settings.rules.mql_threshold
    assert policy.expected["rule_mql"]["mqls"]["value"] == len(
        naive_first_crossings(calibration_frame, "rule_score", settings.rules.mql_threshold, second_month(calibration_frame))
    )


# ------------------------------------------------------------------ stages


@pytest.fixture()
def stage_policy() -> StagePolicy:
    return StagePolicy(mql_threshold=0.2, sql_threshold=0.4, hysteresis=0.1, rule_mql_threshold=50.0)


def _walk(policy: StagePolicy, scores: list[tuple[float, float]], start: str | None = None) -> list[str]:
    stages, prev = [], start
    for p_sql, p_opp in scores:
        prev = policy.stage(p_sql, p_opp, prev)
        stages.append(prev)
    return stages


def test_hysteresis_stops_flip_flops(stage_policy: StagePolicy) -> None:
    wobble = [(0.2 * (1 + 0.05 * (-1) ** i), 0.0) for i in range(20)]  # 0.21, 0.19, 0.21, ...
    stages = _walk(stage_policy, wobble)
    changes = sum(a != b for a, b in zip(["lead", *stages], stages, strict=False))
    assert changes == 1 and stages[-1] == "mql"
    # Without a band the same wobble would flip on every call.
    bare = stage_policy.model_copy(update={"hysteresis": 0.0})
    assert sum(a != b for a, b in zip(_walk(bare, wobble), _walk(bare, wobble)[1:], strict=False)) == 19
    sql_wobble = [(0.5, 0.4 * (1 + 0.05 * (-1) ** i)) for i in range(20)]
    stages = _walk(stage_policy, sql_wobble, start="mql")
    assert stages == ["sql"] * 20


def test_a_real_drop_leaves_the_stage(stage_policy: StagePolicy) -> None:
    assert _walk(stage_policy, [(0.25, 0.0), (0.17, 0.0)]) == ["mql", "lead"]
    assert _walk(stage_policy, [(0.5, 0.45), (0.5, 0.35), (0.1, 0.1)]) == ["sql", "mql", "lead"]


def test_sales_stages_are_never_overridden(stage_policy: StagePolicy) -> None:
    for stage in ("opportunity", "customer", "disqualified"):
        assert stage_policy.stage(0.0, 0.0, stage) == stage
        assert stage_policy.stage(1.0, 1.0, stage) == stage
    assert stage_policy.stage(0.1, 0.0, "subscriber") == "subscriber"
    assert stage_policy.stage(0.3, 0.0, "subscriber") == "mql"
    assert stage_policy.stage(0.1, 0.0, None) == "lead"


def test_recycling_after_no_progress(stage_policy: StagePolicy) -> None:
    assert stage_policy.stage(0.3, 0.0, "mql", days_in_stage=10) == "mql"
    assert stage_policy.stage(0.3, 0.0, "mql", days_in_stage=45) == "recycled"
    assert stage_policy.stage(0.3, 0.5, "mql", days_in_stage=60) == "sql"  # progress: not recycled
    # A recycled lead needs new evidence (the threshold plus the band) to come back.
    assert stage_policy.stage(0.21, 0.0, "recycled") == "recycled"
    assert stage_policy.stage(0.23, 0.0, "recycled") == "mql"


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("mutate", "column"),
    [
        (lambda f: f.drop(columns=["rule_score"]), "rule_score"),
        (lambda f: f.assign(p_sql=f["p_sql"].where(f.index != 3)), "p_sql"),
        (lambda f: f.assign(p_opportunity=f["p_opportunity"] + 2), "p_opportunity"),
        (lambda f: f.assign(y_sql=f["y_sql"].fillna(0) * 2), "y_sql"),
        (lambda f: f.assign(as_of="not a time"), "as_of"),
    ],
)
def test_bad_scored_frame_names_the_column(settings: Settings, mutate, column: str) -> None:  # type: ignore[no-untyped-def]
    frame = mutate(synthetic_scored(n_leads=50, seed=3))
    with pytest.raises(ScoredFrameError, match=column):
        fit_stage_policy(frame, settings)


def test_what_if_options(settings: Settings) -> None:
    assert what_if_policy(settings, 120, None, None, None).capacity_per_month == 120
    assert what_if_policy(settings, None, 0.4, None, None).kind == "target_rate"
    ev = what_if_policy(settings, None, None, 500.0, 50.0)
    assert (ev.kind, ev.value_of_sql, ev.cost_of_follow_up) == ("expected_value", 500.0, 50.0)
    assert what_if_policy(settings, None, None, None, None) == settings.sla.mql_policy
    with pytest.raises(typer.BadParameter, match="choose one"):
        what_if_policy(settings, 100, 0.3, None, None)
    with pytest.raises(typer.BadParameter, match="--cost"):
        what_if_policy(settings, None, None, 500.0, None)


def test_records_ignore_non_records() -> None:
    lead = np.array([0, 0, 0, 1, 1])
    score = np.array([0.3, 0.2, 0.5, 0.1, 0.1])
    rec = Records.build(lead, score)
    assert rec.rows.tolist() == [0, 2, 3]
    assert rec.at(0.25).tolist() == [0] and rec.at(0.4).tolist() == [2] and rec.at(0.05).tolist() == [0, 3]


def test_single_month_has_no_warmup_and_says_so(sla_settings: Settings) -> None:
    one = synthetic_scored(n_leads=400, seed=5, months=1)
    policy = fit_stage_policy(one, sla_settings, override=MQLPolicy(kind="capacity", capacity_per_month=50))
    assert policy.expected["months"] == ["2026-05"]
    assert policy.expected["warmup"].startswith("no warm-up")
    assert policy.expected["mql"]["mqls"]["value"] == len(naive_first_crossings(one, "p_sql", policy.mql_threshold))
