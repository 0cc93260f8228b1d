"""A generated B2B CRM history whose ground truth is known.

Why generate at all: real CRM exports never tell you how good a score *could* be. Here every lead has
a latent fit (a function of its firmographics and job title plus a little noise) and a latent
interest state that moves day by day through a Markov chain (cold → aware → engaged → buying).
Activities are emitted from the state (buying leads view the pricing page and ask for demos);
the lead becomes SQL through a daily hazard driven by state and fit. Because the process is a
Markov chain, the true probability of becoming SQL within 30 days (and an opportunity within 90)
given the latent state on a day is computed exactly, and written beside the tables
(``ground_truth.parquet``): the ceiling any model can be compared with.

On top of that latent process the generator plays the company's real history: a points rule sets
MQLs, sales accepts SQLs (passing them through MQL when the rule missed them), disqualifies some
MQLs, recycles stale MQLs back to marketing, and turns SQLs into opportunities, won or lost.
Funnel rates are calibrated to ``settings.generator``. Everything is vectorised over leads
(dense lead × day matrices), so 100k leads and ~10M activities take well under two minutes.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from leadscore.config import Settings
from leadscore.generate_sla import LOST_REASON, SalesFloor, activity_table
from leadscore.generate_truth import exact_truth, exact_truth_shifted, write_truth
from leadscore.generate_world import (
    COUNTRIES,
    DEPARTMENTS,
    EMISSION_RATE,
    FIT_LOGIT,
    FREE_MAIL,
    INDUSTRIES,
    INITIAL_STATE,
    SECONDS_PER_DAY,
    SENIORITY,
    SOURCES,
    STATE_LOGIT,
    STATES,
    TLD,
    TRANSITIONS,
    TYPE_MIX,
    company_names,
    job_titles,
    pick,
)
from leadscore.scenarios import SCENARIO_STREAM, RegimeShift


def _blocks(n: int, size: int = 8192) -> list[slice]:
    """Lead blocks, so that lead × day temporaries stay small (memory, not speed)."""
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def _some_missing(values: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``values`` where ``keep``, else None (a CRM field nobody filled in)."""
    out = values.astype(object)
    out[~keep] = None
    return out


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _solve_offset(target: float, fn: object, lo: float = -30.0, hi: float = 30.0) -> float:
    """Bisection for the intercept that makes a monotone increasing rate hit ``target``."""
    assert callable(fn)
    for _ in range(60):
        mid = (lo + hi) / 2
        if fn(mid) < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _utc(day0: pd.Timestamp, seconds: np.ndarray) -> pd.Series:
    return pd.Series(
        pd.to_datetime(day0.value // 1000 + seconds.astype(np.int64) * 1_000_000, unit="us", utc=True)
    )


def _str_ids(prefix: str, idx: np.ndarray, width: int) -> np.ndarray:
    return np.char.add(prefix, np.char.zfill(idx.astype(str), width))


def generate_crm(
    out_dir: Path | str,
    n_leads: int,
    months: int,
    seed: int,
    settings: Settings,
    end: str = "2026-11-01",
    scenario: RegimeShift | None = None,
) -> dict[str, object]:
    """Write the five CRM tables, ``ground_truth.parquet`` and ``manifest.json`` to ``out_dir``.

    Deterministic per ``seed``. Returns a summary (counts, realised funnel rates, seconds).
    ``scenario`` changes the world from a shift day on (:mod:`leadscore.scenarios`); ``None`` draws
    exactly the default history.
    """
    started = time.perf_counter()
    g = settings.generator
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    end_ts = pd.Timestamp(end, tz="UTC").normalize()
    start_ts = end_ts - pd.DateOffset(months=months)
    n_days = int((end_ts - start_ts).days)
    n = int(n_leads)
    srng = np.random.default_rng([seed, SCENARIO_STREAM])  # scenario draws never touch ``rng``
    shift_day = scenario.shift_day(start_ts, end_ts, months) if scenario else n_days

    # --- accounts -------------------------------------------------------------------------------
    n_acc = max(1, round(g.accounts_per_lead * n))
    acc_industry, acc_ind_idx = pick(rng, INDUSTRIES, n_acc)  # type: ignore[arg-type]
    acc_country, _ = pick(rng, COUNTRIES, n_acc)  # type: ignore[arg-type]
    employees = np.clip(np.round(np.exp(rng.normal(np.log(200), 1.6, n_acc))), 1, 250_000).astype(np.int64)
    revenue = np.round(employees * np.exp(rng.normal(np.log(150_000), 0.5, n_acc)), -3)
    names = company_names(rng, n_acc)
    slug = np.char.replace(np.char.lower(names), " ", "")
    tld = np.array([TLD.get(c, "com") for c in acc_country])
    domains = np.char.add(np.char.add(slug, "."), tld)
    acc_created = rng.integers(-720 * SECONDS_PER_DAY, 0, n_acc)

    # --- leads ------------------------------------------------------------------------------------
    corporate = rng.random(n) < 0.75
    popularity = rng.pareto(1.2, n_acc) + 1
    lead_acc = rng.choice(n_acc, size=n, p=popularity / popularity.sum())
    lead_acc = np.where(corporate, lead_acc, -1)
    free_country, _ = pick(rng, COUNTRIES, n)  # type: ignore[arg-type]
    country = np.where(corporate, acc_country[np.maximum(lead_acc, 0)], free_country)
    lang = np.array([COUNTRIES[c][1] for c in country])
    seniority, sen_idx = pick(rng, SENIORITY, n)  # type: ignore[arg-type]
    department, dep_idx = pick(rng, DEPARTMENTS, n)  # type: ignore[arg-type]
    exec_mask = (seniority == "c_level") & (rng.random(n) < 0.5)
    department = np.where(exec_mask, "executive", department)
    dep_idx = np.where(exec_mask, list(DEPARTMENTS).index("executive"), dep_idx)
    source, src_idx = pick(rng, SOURCES, n)  # type: ignore[arg-type]
    titles = job_titles(rng, seniority, department, lang)
    free_domain = np.array(FREE_MAIL)[rng.integers(0, len(FREE_MAIL), n)]
    email_domain = np.where(corporate, domains[np.maximum(lead_acc, 0)], free_domain)
    growth = rng.random(n) ** 0.8  # a little more leads recently
    created_day = np.minimum((growth * n_days).astype(np.int64), n_days - 1)
    created_sec = created_day * SECONDS_PER_DAY + rng.integers(6 * 3600, 18 * 3600, n)
    crm_seniority = _some_missing(seniority, rng.random(n) < 0.5)
    crm_department = _some_missing(department, rng.random(n) < 0.5)
    subscriber = (source == "newsletter") | (rng.random(n) < g.subscriber_share * 0.5)
    if scenario is not None:
        acc_cols, lead_acc = scenario.move_upmarket(srng, {
            "name": names, "domain": domains, "industry": acc_industry, "industry_idx": acc_ind_idx,
            "country": acc_country, "employees": employees, "annual_revenue": revenue, "created_sec": acc_created,
        }, lead_acc, created_day >= shift_day, shift_day)
        names, domains, acc_industry, acc_ind_idx, acc_country, employees, revenue, acc_created = (
            acc_cols[k] for k in ("name", "domain", "industry", "industry_idx", "country", "employees",
                                  "annual_revenue", "created_sec"))
        n_acc = len(employees)
        email_domain = np.where(corporate, domains[np.maximum(lead_acc, 0)], free_domain)

    # --- latent fit -------------------------------------------------------------------------------
    emp = employees[np.maximum(lead_acc, 0)]
    size_w = np.where((emp >= 50) & (emp <= 5000), 0.5, np.where(emp < 10, -0.4, 0.0))
    icp_country = np.isin(country, settings.icp.countries)
    ind_w = np.array([v[1] for v in INDUSTRIES.values()])[acc_ind_idx[np.maximum(lead_acc, 0)]]
    fit = (
        np.where(corporate, ind_w + size_w, -0.8)
        + np.array([v[1] for v in SENIORITY.values()])[sen_idx]
        + np.array([v[1] for v in DEPARTMENTS.values()])[dep_idx]
        + np.array([v[1] for v in SOURCES.values()])[src_idx]
        + 0.2 * icp_country
        + rng.normal(0, 0.25, n)
    )
    fit = (fit - fit.mean()) / (fit.std() + 1e-9)

    # --- latent interest chain (dense lead × day) -------------------------------------------------
    cum_t = np.cumsum(TRANSITIONS, axis=1)
    init = np.tile(INITIAL_STATE, (n, 1))
    warm_src = np.isin(source, ["event", "webinar", "referral", "partner"])
    init[warm_src] = [0.05, 0.45, 0.38, 0.12]
    cum_init = np.cumsum(init, axis=1)
    state = np.full((n, n_days), -1, dtype=np.int8)
    current = np.zeros(n, dtype=np.int64)
    for d in range(n_days):
        u = rng.random(n)
        nxt = (u[:, None] > cum_t[current][:, :-1]).sum(axis=1)
        born = created_day == d
        nxt[born] = (u[born, None] > cum_init[born][:, :-1]).sum(axis=1)
        alive = created_day <= d
        current = np.where(alive, nxt, current)
        state[:, d] = np.where(alive, current, -1)
    alive = state >= 0

    # --- SQL hazard, calibrated to lead→MQL × MQL→SQL ---------------------------------------------
    target_sql = g.lead_to_mql * g.mql_to_sql
    state_days = np.stack([(state == k).sum(axis=1) for k in range(4)], axis=1)  # lead × state day counts
    # a scenario's lift comes on top of the calibrated company (its shifted days convert more)
    lift = scenario.sql_logit_lift if scenario else 0.0

    def hazard_at(offset: float, extra: float = 0.0) -> np.ndarray:
        return _sigmoid(offset + STATE_LOGIT[None, :] + FIT_LOGIT * fit[:, None] + extra)  # lead × state

    def sql_share(offset: float) -> float:
        log_surv = (state_days * np.log1p(-hazard_at(offset))).sum(axis=1)
        return float(np.mean(1 - np.exp(log_surv)))

    offset = _solve_offset(target_sql, sql_share)
    hazard, hazard_late = hazard_at(offset), hazard_at(offset, lift)
    # a Bernoulli(h) draw per day is the same as an Exp(1) threshold on the cumulative hazard
    neg_log = np.concatenate([-np.log1p(-hazard), np.zeros((n, 1))], axis=1).astype(np.float32)
    neg_log_late = np.concatenate([-np.log1p(-hazard_late), np.zeros((n, 1))], axis=1).astype(np.float32)
    threshold = rng.exponential(1.0, n).astype(np.float32)
    sql_day = np.full(n, -1, dtype=np.int64)
    for b in _blocks(n):
        at = state[b].astype(np.intp) % 5
        steps = np.take_along_axis(neg_log[b], at, axis=1)
        steps[:, shift_day:] = np.take_along_axis(neg_log_late[b], at[:, shift_day:], axis=1)
        cum_haz = np.cumsum(steps, axis=1)
        crossed = cum_haz >= threshold[b, None]
        sql_day[b] = np.where(crossed.any(axis=1), crossed.argmax(axis=1), -1)
    is_sql = sql_day >= 0
    sql_sec = np.where(is_sql, sql_day * SECONDS_PER_DAY + rng.integers(20 * 3600 + 1800, 23 * 3600 + 3500, n), -1)

    # --- activities ----------------------------------------------------------------------------------
    multiplier = np.exp(rng.normal(0, 0.3, n))
    kappa = g.activities_per_lead * n / max(float((multiplier * (state_days @ EMISSION_RATE)).sum()), 1e-9)
    rate = np.append(EMISSION_RATE, 0.0).astype(np.float32)  # index -1 (not yet created) → 0
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for b in _blocks(n):
        counts = rng.poisson(rate[state[b]] * (multiplier[b] * kappa).astype(np.float32)[:, None])
        flat = np.flatnonzero(counts)
        reps = counts.ravel()[flat]
        parts.append((
            np.repeat(flat // n_days + b.start, reps).astype(np.int32),
            np.repeat(flat % n_days, reps).astype(np.int32),
            np.repeat(state[b].ravel()[flat], reps),
        ))
    act_lead = np.concatenate([p[0] for p in parts])
    act_day = np.concatenate([p[1] for p in parts])
    act_state = np.concatenate([p[2] for p in parts])
    del parts, counts
    type_names = settings.activity_names
    act_type = np.zeros(len(act_lead), dtype=np.int16)
    for k, st in enumerate(STATES):
        idx = np.flatnonzero(act_state == k)
        mix = TYPE_MIX[st]
        probs = np.array([mix.get(t, 0.0) for t in type_names])
        act_type[idx] = rng.choice(len(type_names), size=len(idx), p=probs / probs.sum())
    if scenario is not None:
        act_type = scenario.change_meaning(srng, act_type, act_day, act_state, shift_day, type_names)
    act_sec = act_day.astype(np.int64) * SECONDS_PER_DAY + rng.integers(7 * 3600, 20 * 3600, len(act_lead))
    order = np.lexsort((act_sec, act_lead))
    act_lead, act_sec, act_type, act_day = act_lead[order], act_sec[order], act_type[order], act_day[order]
    del order, act_state

    # --- the points rule that set MQLs in this company ---------------------------------------------
    pts_by_type = np.array([settings.rules.activity_points.get(t, 0.0) for t in type_names], dtype=np.float32)
    # activities are sorted by lead and time, so each (lead, day) is one contiguous run
    key = act_lead.astype(np.int64) * n_days + act_day
    run_start = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if len(key) else np.array([], dtype=np.intp)
    daily_pts = np.zeros((n, n_days), dtype=np.float32)
    if len(key):
        daily_pts.ravel()[key[run_start]] = np.add.reduceat(pts_by_type[act_type], run_start)
    del key, run_start
    half_life = settings.rules.half_life_days or 30.0
    decay = np.float32(0.5 ** (1.0 / half_life))
    score = np.zeros((n, n_days), dtype=np.float32)
    running = np.zeros(n, dtype=np.float32)
    for d in range(n_days):
        running = running * decay + daily_pts[:, d]
        score[:, d] = running
    del daily_pts
    open_until = np.where(is_sql, sql_day, n_days)
    peak = np.full(n, -np.inf, dtype=np.float32)
    for b in _blocks(n):
        before_sql = np.arange(n_days)[None, :] < open_until[b, None]
        peak[b] = np.where(before_sql & alive[b], score[b], -np.inf).max(axis=1)
    extra_mqls = round(g.lead_to_mql * n) - int(is_sql.sum())
    candidates = np.sort(peak[~is_sql])[::-1]
    mql_threshold = float(candidates[extra_mqls - 1]) if 0 < extra_mqls <= len(candidates) else np.inf
    mql_threshold = max(mql_threshold, 1.0)

    # --- the lifecycle process, day by day ---------------------------------------------------------
    LEAD, MQL, SQL_, RECYCLED, DISQ = 1, 2, 3, 6, 7
    stage = np.where(subscriber, 0, LEAD)
    armed = np.ones(n, dtype=bool)
    mql_since = np.full(n, -1)
    dq_at = np.full(n, -1)
    dq_prob = np.clip(g.disqualify_share_of_mqls * np.exp(-0.8 * fit) / np.mean(np.exp(-0.8 * fit)), 0, 0.9)
    dq_draw = rng.random(n)
    dq_delay = rng.integers(1, 6, n)
    changes_lead: list[np.ndarray] = []
    changes_sec: list[np.ndarray] = []
    changes_stage: list[np.ndarray] = []
    changes_by: list[np.ndarray] = []
    changes_reason: list[np.ndarray] = []
    floor = SalesFloor.draw(seed, n, n_days, fit, g.lead_to_mql)  # its own stream: ``rng`` is untouched

    def record(idx: np.ndarray, sec: np.ndarray, code: int, by: str, reason: object = None) -> None:
        changes_lead.append(idx)
        changes_sec.append(sec)
        changes_stage.append(np.full(len(idx), code, dtype=np.int8))
        changes_by.append(np.full(len(idx), by, dtype=object))
        changes_reason.append(reason if isinstance(reason, np.ndarray) else np.full(len(idx), reason, dtype=object))

    record(np.arange(n), created_sec, 0, "rule")
    changes_stage[-1] = np.where(subscriber, 0, LEAD).astype(np.int8)
    for d in range(n_days):
        s_d = score[:, d]
        open_ = alive[:, d] & ((sql_day < 0) | (d < sql_day))
        armed |= s_d < 0.8 * mql_threshold
        to_mql = open_ & np.isin(stage, (0, LEAD, RECYCLED)) & armed & (s_d >= mql_threshold)
        if to_mql.any():
            idx = np.flatnonzero(to_mql)
            at = d * SECONDS_PER_DAY + 20 * 3600 + rng.integers(0, 1800, len(idx))
            record(idx, at, MQL, "rule")
            floor.hand_over(idx, d, at)
            stage[idx], mql_since[idx], armed[idx] = MQL, d, False
            dq = idx[dq_draw[idx] < dq_prob[idx]]
            dq_at[dq] = d + dq_delay[dq]
        to_dq = open_ & (stage == MQL) & (dq_at == d)
        if to_dq.any():
            idx = np.flatnonzero(to_dq)
            at = d * SECONDS_PER_DAY + 15 * 3600 + rng.integers(0, 3600, len(idx))
            record(idx, at, DISQ, "sales", floor.dq_reasons(idx))
            floor.close(idx, at)
            stage[idx] = DISQ
        to_rec = open_ & (stage == MQL) & (d - mql_since >= g.recycle_after_days)
        if to_rec.any():
            idx = np.flatnonzero(to_rec)
            at = d * SECONDS_PER_DAY + 16 * 3600 + rng.integers(0, 3600, len(idx))
            record(idx, at, RECYCLED, "sales", floor.return_reasons(len(idx)))
            floor.close(idx, at)
            stage[idx] = RECYCLED
        becomes_sql = sql_day == d
        if becomes_sql.any():
            idx = np.flatnonzero(becomes_sql)
            handed = idx[(stage[idx] == MQL) & (floor.open_handover[idx] >= 0)]
            kept, sql_sec[handed] = floor.convert(handed, sql_sec[handed])
            lost = handed[~kept]  # the rep came too late: the lead is handed back, and never converts
            record(lost, sql_sec[lost], RECYCLED, "sales", LOST_REASON)
            stage[lost], sql_day[lost] = RECYCLED, -1
            idx = np.setdiff1d(idx, lost)
            skip = idx[stage[idx] != MQL]
            record(skip, sql_sec[skip] - 60, MQL, "sales")
            record(idx, sql_sec[idx], SQL_, "sales")
            stage[idx] = SQL_
    del score
    # an SQL that waited for the rep's first touch is dated then (the latent days before it stay open)
    sql_day = np.where(sql_day >= 0, sql_sec // SECONDS_PER_DAY, -1)
    is_sql = sql_day >= 0
    # subscribers become leads at their first conversion activity (a form, a download, ...)
    conversion = np.isin(np.array(type_names)[act_type], ["form_submit", "content_download", "webinar_attended",
                                                          "demo_request", "trial_signup"])
    first_conv = np.full(n, np.iinfo(np.int64).max)
    np.minimum.at(first_conv, act_lead[conversion], act_sec[conversion])
    promoted_at = np.concatenate([changes_sec[i] for i in range(1, len(changes_sec))]) if len(changes_sec) > 1 else np.array([], dtype=np.int64)
    promoted_lead = np.concatenate(changes_lead[1:]) if len(changes_lead) > 1 else np.array([], dtype=np.int64)
    first_promo = np.full(n, np.iinfo(np.int64).max)
    np.minimum.at(first_promo, promoted_lead, promoted_at)
    to_lead = np.flatnonzero(subscriber & (first_conv < first_promo))
    record(to_lead, first_conv[to_lead] + 1, LEAD, "rule")

    # --- opportunities -------------------------------------------------------------------------------
    sql_idx = np.flatnonzero(is_sql)
    opp_offset = _solve_offset(g.sql_to_opportunity, lambda o: float(np.mean(_sigmoid(o + 0.8 * fit[sql_idx]))) if len(sql_idx) else 0.5)
    q_opp = _sigmoid(opp_offset + 0.8 * fit)
    opp_delay_p = 0.1  # geometric delay from SQL to opportunity, mean 10 days
    makes_opp = is_sql & (rng.random(n) < q_opp)
    opp_fit = fit[makes_opp]
    won_offset = _solve_offset(g.opportunity_to_won, lambda o: float(np.mean(_sigmoid(o + 0.8 * opp_fit))) if len(opp_fit) else 0.5)
    q_won = _sigmoid(won_offset + 0.8 * fit)
    opp_delay = rng.geometric(opp_delay_p, n)
    opp_sec = sql_sec + opp_delay * SECONDS_PER_DAY + rng.integers(-4 * 3600, 4 * 3600, n)
    close_days = 14 + rng.geometric(1 / 40, n)
    close_sec = opp_sec + close_days * SECONDS_PER_DAY
    won_draw = rng.random(n) < q_won
    amounts = np.round(5000 * np.sqrt(emp) * np.exp(rng.normal(0, 0.4, n)), -2)
    horizon = n_days * SECONDS_PER_DAY
    opp_idx = np.flatnonzero(makes_opp & (opp_sec < horizon))
    closed = close_sec[opp_idx] < horizon
    won = closed & won_draw[opp_idx]
    record(opp_idx, opp_sec[opp_idx], 4, "sales")
    record(opp_idx[won], close_sec[opp_idx][won], 5, "sales")

    # --- ground truth: exact P(SQL ≤ 30 d), P(opportunity ≤ 90 d) given the latent state ------------
    if scenario is None:
        v30, p_opp_truth = exact_truth(hazard, q_opp, opp_delay_p, settings)
    else:  # per number of unshifted days at the start of the horizon
        v30, p_opp_truth = exact_truth_shifted(hazard, hazard_late, q_opp, opp_delay_p, settings)
    last_open = np.where(is_sql, sql_day, n_days - 1)
    truth_len = np.maximum(last_open - created_day + 1, 0)
    truth_rows = int(truth_len.sum())

    # --- write ---------------------------------------------------------------------------------------
    lead_ids = _str_ids("L", np.arange(n), 7)
    acc_ids = _str_ids("C", np.arange(n_acc), 6)
    accounts = pd.DataFrame({
        "account_id": acc_ids, "name": names, "domain": domains, "industry": acc_industry,
        "employees": employees, "annual_revenue": revenue, "country": acc_country,
        "created_at": _utc(start_ts, acc_created),
    })
    leads = pd.DataFrame({
        "lead_id": lead_ids,
        "account_id": _some_missing(acc_ids[np.maximum(lead_acc, 0)], lead_acc >= 0),
        "email_domain": email_domain, "job_title": titles, "seniority": crm_seniority,
        "department": crm_department, "country": country, "source": source,
        "created_at": _utc(start_ts, created_sec),
        "owner": floor.owners(np.isin(np.arange(n), np.concatenate(changes_lead[1:])) & (stage != 0)),
    })
    accounts.to_parquet(out / "accounts.parquet", index=False)
    leads.to_parquet(out / "leads.parquet", index=False)
    del alive
    t_lead, t_sec, t_kind = floor.touches(horizon)
    activities = activity_table(start_ts, lead_ids, type_names, settings.sales_activity_names,
                                (act_lead, act_sec, act_type), (t_lead, t_sec, t_kind))
    n_activities = len(activities)
    activities.to_parquet(out / "activities.parquet", index=False)
    del activities, act_lead, act_sec, act_type, act_day
    stage_names = ["subscriber", "lead", "mql", "sql", "opportunity", "customer", "recycled", "disqualified"]
    ch_lead = np.concatenate(changes_lead)
    ch_sec = np.concatenate(changes_sec)
    ch_stage = np.concatenate(changes_stage)
    ch_by = np.concatenate(changes_by)
    ch_order = np.lexsort((ch_sec, ch_lead))
    stage_changes = pd.DataFrame({
        "lead_id": lead_ids[ch_lead[ch_order]],
        "stage": np.array(stage_names)[ch_stage[ch_order]],
        "changed_at": _utc(start_ts, ch_sec[ch_order]),
        "set_by": ch_by[ch_order],
        "reason": np.concatenate(changes_reason)[ch_order],
    }).drop_duplicates(["lead_id", "changed_at", "stage"])
    opportunities = pd.DataFrame({
        "opportunity_id": _str_ids("O", np.arange(len(opp_idx)), 6),
        "lead_id": lead_ids[opp_idx],
        "account_id": _some_missing(acc_ids[np.maximum(lead_acc[opp_idx], 0)], lead_acc[opp_idx] >= 0),
        "created_at": _utc(start_ts, opp_sec[opp_idx]),
        "stage": np.where(closed, np.where(won, "closed_won", "closed_lost"), "open"),
        "amount": amounts[opp_idx],
        "closed_at": _utc(start_ts, np.where(closed, close_sec[opp_idx], 0)).where(closed),
        "is_won": pd.array(np.where(closed, won, False), dtype="boolean"),
    })
    opportunities.loc[~closed, "is_won"] = pd.NA
    for name, frame in (("stage_changes", stage_changes), ("opportunities", opportunities)):
        frame.to_parquet(out / f"{name}.parquet", index=False)
    write_truth(out / "ground_truth.parquet", start_ts, lead_ids, state, created_day, truth_len, v30, p_opp_truth,
                shift_day)

    mql_leads = set(ch_lead[ch_stage == MQL])
    n_opps, n_closed = len(opp_idx), int(closed.sum())
    summary: dict[str, object] = {
        "leads": n,
        "accounts": n_acc,
        "activities": n_activities,
        "stage_changes": len(stage_changes),
        "opportunities": n_opps,
        "won": int(won.sum()),
        "lead_to_mql": len(mql_leads) / n,
        "mql_to_sql": int(is_sql.sum()) / max(len(mql_leads), 1),
        "sql_to_opportunity": n_opps / max(int(is_sql.sum()), 1),
        "opportunity_to_won": int(won.sum()) / max(n_closed, 1),
        "rule_mql_threshold": mql_threshold,
        "sales_touches": len(t_lead),
        "ground_truth_rows": truth_rows,
        "seconds": round(time.perf_counter() - started, 2),
    }
    manifest = {
        "cutoff": end_ts.isoformat(),
        "start": start_ts.isoformat(),
        "generator": {"seed": seed, "leads": n, "months": months, **g.model_dump()},
        "realised": {k: v for k, v in summary.items() if k != "seconds"},
        "sla": floor.truth(settings.sla.ops.delay_bands_hours, settings.sla.ops.acceptance_days, horizon),
    }
    if scenario is not None:
        shifted_from = (start_ts + pd.Timedelta(days=shift_day)).isoformat()
        manifest["scenario"] = {**dataclasses.asdict(scenario), "shifted_from": shifted_from}
        summary["scenario"], summary["shifted_from"] = scenario.name, shifted_from
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, default=float))
    return summary
