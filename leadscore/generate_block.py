"""One block of the generated company: a fixed number of leads, their accounts, and everything they did.

Why blocks: a CRM of a million leads (a hundred million activities) cannot be drawn as dense
lead × day matrices at once. The generator (:mod:`leadscore.generate`) plays the company block by
block instead: each block owns its accounts and the leads that belong to them (plus its share of the
free-mail leads, which have none), draws from random streams keyed by ``(seed, block index)``, and is
written out before the next one is drawn, so memory is bounded by the block and the history is the
same whatever files it is split into.

What must be shared by the whole company (the intercept that makes the SQL hazard hit the configured
funnel rate, the activity scale, the points rule's MQL threshold, the opportunity and win offsets, the
fit's standardisation) is a :class:`Calibration`: solved in-sample on block 0, exactly as the
single-block generator always solved it, then held fixed for every later block. Block 0 never depends
on the block count or the partitioning, so neither does anything else.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from leadscore.config import Settings
from leadscore.generate_lifecycle import MQL, Lifecycle, run_lifecycle
from leadscore.generate_sla import SLA_STREAM, SalesFloor, activity_table
from leadscore.generate_truth import exact_truth, exact_truth_shifted, truth_table
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

#: leads per block: a constant (never derived from the partition count), so blocks, and the history, are
#: the same however the files are split; ~1.5 M activities and a few hundred MB of temporaries per block
BLOCK_LEADS = 16_384


@dataclass(frozen=True)
class Calibration:
    """The company-wide constants solved on block 0 (see the module doc)."""

    fit_mean: float
    fit_std: float
    sql_offset: float
    kappa: float
    mql_threshold: float
    dq_norm: float
    opp_offset: float
    won_offset: float


@dataclass(frozen=True)
class World:
    """What every block shares, computed from the parameters alone."""

    settings: Settings
    seed: int
    start_ts: pd.Timestamp
    n_days: int
    shift_day: int
    scenario: RegimeShift | None
    lead_width: int
    account_width: int
    opportunity_width: int


@dataclass
class Counters:
    """Running numbers for ids across blocks (ids only: no random draw depends on them)."""

    accounts: int = 0
    activities: int = 0
    touches: int = 0
    opportunities: int = 0


@dataclass
class Block:
    tables: dict[str, pd.DataFrame]
    truth: object  # a pyarrow Table (ground_truth rows of this block)
    stats: dict[str, int]
    handovers: dict[str, np.ndarray]
    calibration: Calibration


def _sub_blocks(n: int, size: int = 8192) -> list[slice]:
    """Lead slices within a block, so that lead × day temporaries stay small (memory, not speed)."""
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def _some_missing(values: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``values`` where ``keep``, else None (a CRM field nobody filled in)."""
    out = values.astype(object)
    out[~keep] = None
    return out


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def solve_offset(target: float, fn: Callable[[float], float], lo: float = -30.0, hi: float = 30.0) -> float:
    """Bisection for the intercept that makes a monotone increasing rate hit ``target``."""
    for _ in range(60):
        mid = (lo + hi) / 2
        if fn(mid) < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def utc(day0: pd.Timestamp, seconds: np.ndarray) -> pd.Series:
    return pd.Series(
        pd.to_datetime(day0.value // 1000 + seconds.astype(np.int64) * 1_000_000, unit="us", utc=True)
    )


def str_ids(prefix: str, idx: np.ndarray, width: int) -> np.ndarray:
    return np.char.add(prefix, np.char.zfill(idx.astype(str), width))


def simulate_block(
    world: World, block: int, lead0: int, n: int, counters: Counters, calibration: Calibration | None
) -> Block:
    """Draw block ``block``: leads ``lead0 .. lead0 + n - 1``, their accounts and all their rows.

    ``calibration`` ``None`` (block 0) solves the company's constants in-sample and returns them.
    """
    settings, g = world.settings, world.settings.generator
    n_days, shift_day, scenario = world.n_days, world.shift_day, world.scenario
    # streams keyed (seed, stream, block): a trailing 0 does not change a SeedSequence, so block 0 draws
    # exactly what the single-block generator drew from ``seed``, ``[seed, SCENARIO_STREAM]`` and
    # ``[seed, SLA_STREAM]``; the middle entry keeps the three families of streams apart
    rng = np.random.default_rng([world.seed, 0, block])
    srng = np.random.default_rng([world.seed, SCENARIO_STREAM, block])  # scenario draws never touch ``rng``
    solved: dict[str, float] = dataclasses.asdict(calibration) if calibration else {}

    def fixed(name: str, solve: Callable[[], float]) -> float:
        if name not in solved:
            solved[name] = float(solve())
        return solved[name]

    # --- accounts -------------------------------------------------------------------------------
    n_acc = max(1, round(g.accounts_per_lead * n))
    acc_industry, acc_ind_idx = pick(rng, INDUSTRIES, n_acc)  # type: ignore[arg-type]
    acc_country, _ = pick(rng, COUNTRIES, n_acc)  # type: ignore[arg-type]
    employees = np.clip(np.round(np.exp(rng.normal(np.log(200), 1.6, n_acc))), 1, 250_000).astype(np.int64)
    revenue = np.round(employees * np.exp(rng.normal(np.log(150_000), 0.5, n_acc)), -3)
    names = company_names(rng, n_acc, first=counters.accounts)
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
    raw_fit = (
        np.where(corporate, ind_w + size_w, -0.8)
        + np.array([v[1] for v in SENIORITY.values()])[sen_idx]
        + np.array([v[1] for v in DEPARTMENTS.values()])[dep_idx]
        + np.array([v[1] for v in SOURCES.values()])[src_idx]
        + 0.2 * icp_country
        + rng.normal(0, 0.25, n)
    )
    fit = (raw_fit - fixed("fit_mean", raw_fit.mean)) / (fixed("fit_std", raw_fit.std) + 1e-9)

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
        alive_d = created_day <= d
        current = np.where(alive_d, nxt, current)
        state[:, d] = np.where(alive_d, current, -1)

    # --- SQL hazard, calibrated to lead→MQL × MQL→SQL ---------------------------------------------
    target_sql = g.lead_to_mql * g.mql_to_sql
    state_days = np.stack([(state == k).sum(axis=1) for k in range(4)], axis=1)  # lead × state day counts
    # a scenario's lift comes on top of the calibrated company (its shifted days convert more)
    lift = scenario.sql_logit_lift if scenario else 0.0

    def hazard_at(offset: float, extra: float = 0.0) -> np.ndarray:
        return sigmoid(offset + STATE_LOGIT[None, :] + FIT_LOGIT * fit[:, None] + extra)  # lead × state

    def sql_share(offset: float) -> float:
        log_surv = (state_days * np.log1p(-hazard_at(offset))).sum(axis=1)
        return float(np.mean(1 - np.exp(log_surv)))

    offset = fixed("sql_offset", lambda: solve_offset(target_sql, sql_share))
    hazard, hazard_late = hazard_at(offset), hazard_at(offset, lift)
    # a Bernoulli(h) draw per day is the same as an Exp(1) threshold on the cumulative hazard
    neg_log = np.concatenate([-np.log1p(-hazard), np.zeros((n, 1))], axis=1).astype(np.float32)
    neg_log_late = np.concatenate([-np.log1p(-hazard_late), np.zeros((n, 1))], axis=1).astype(np.float32)
    threshold = rng.exponential(1.0, n).astype(np.float32)
    sql_day = np.full(n, -1, dtype=np.int64)
    for b in _sub_blocks(n):
        at = state[b].astype(np.intp) % 5
        steps = np.take_along_axis(neg_log[b], at, axis=1)
        steps[:, shift_day:] = np.take_along_axis(neg_log_late[b], at[:, shift_day:], axis=1)
        crossed = np.cumsum(steps, axis=1) >= threshold[b, None]
        sql_day[b] = np.where(crossed.any(axis=1), crossed.argmax(axis=1), -1)
    is_sql = sql_day >= 0
    sql_sec = np.where(is_sql, sql_day * SECONDS_PER_DAY + rng.integers(20 * 3600 + 1800, 23 * 3600 + 3500, n), -1)

    # --- activities ----------------------------------------------------------------------------------
    multiplier = np.exp(rng.normal(0, 0.3, n))
    kappa = fixed("kappa", lambda: g.activities_per_lead * n
                  / max(float((multiplier * (state_days @ EMISSION_RATE)).sum()), 1e-9))
    rate = np.append(EMISSION_RATE, 0.0).astype(np.float32)  # index -1 (not yet created) → 0
    drawn: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for b in _sub_blocks(n):
        counts = rng.poisson(rate[state[b]] * (multiplier[b] * kappa).astype(np.float32)[:, None])
        flat = np.flatnonzero(counts)
        reps = counts.ravel()[flat]
        drawn.append((np.repeat(flat // n_days + b.start, reps).astype(np.int32),
                      np.repeat(flat % n_days, reps).astype(np.int32), np.repeat(state[b].ravel()[flat], reps)))
    act_lead, act_day, act_state = (np.concatenate([p[i] for p in drawn]) for i in range(3))
    del drawn
    type_names = settings.activity_names
    act_type = np.zeros(len(act_lead), dtype=np.int16)
    for k, st in enumerate(STATES):
        idx = np.flatnonzero(act_state == k)
        probs = np.array([TYPE_MIX[st].get(t, 0.0) for t in type_names])
        act_type[idx] = rng.choice(len(type_names), size=len(idx), p=probs / probs.sum())
    if scenario is not None:
        act_type = scenario.change_meaning(srng, act_type, act_day, act_state, shift_day, type_names)
    act_sec = act_day.astype(np.int64) * SECONDS_PER_DAY + rng.integers(7 * 3600, 20 * 3600, len(act_lead))
    order = np.lexsort((act_sec, act_lead))
    act_lead, act_sec, act_type, act_day = act_lead[order], act_sec[order], act_type[order], act_day[order]
    del order, act_state

    # --- the points rule, the lifecycle and the sales floor -----------------------------------------
    floor = SalesFloor.draw(np.random.default_rng([world.seed, SLA_STREAM, block]), n, n_days, fit, g.lead_to_mql)
    life = Lifecycle(n=n, n_days=n_days, state=state, fit=fit, subscriber=subscriber, created_sec=created_sec,
                     sql_day=sql_day, sql_sec=sql_sec, act_lead=act_lead, act_day=act_day, act_sec=act_sec,
                     act_type=act_type)
    changes = run_lifecycle(rng, life, floor, settings, fixed)

    # --- opportunities -------------------------------------------------------------------------------
    sql_day = np.where(life.sql_day >= 0, life.sql_sec // SECONDS_PER_DAY, -1)
    sql_sec, is_sql = life.sql_sec, sql_day >= 0
    sql_fit = fit[is_sql]
    opp_offset = fixed("opp_offset", lambda: solve_offset(
        g.sql_to_opportunity, lambda o: float(np.mean(sigmoid(o + 0.8 * sql_fit))) if len(sql_fit) else 0.5))
    q_opp = sigmoid(opp_offset + 0.8 * fit)
    opp_delay_p = 0.1  # geometric delay from SQL to opportunity, mean 10 days
    makes_opp = is_sql & (rng.random(n) < q_opp)
    opp_fit = fit[makes_opp]
    won_offset = fixed("won_offset", lambda: solve_offset(
        g.opportunity_to_won, lambda o: float(np.mean(sigmoid(o + 0.8 * opp_fit))) if len(opp_fit) else 0.5))
    q_won = sigmoid(won_offset + 0.8 * fit)
    opp_sec = sql_sec + rng.geometric(opp_delay_p, n) * SECONDS_PER_DAY + rng.integers(-4 * 3600, 4 * 3600, n)
    close_sec = opp_sec + (14 + rng.geometric(1 / 40, n)) * SECONDS_PER_DAY
    won_draw = rng.random(n) < q_won
    amounts = np.round(5000 * np.sqrt(emp) * np.exp(rng.normal(0, 0.4, n)), -2)
    horizon = n_days * SECONDS_PER_DAY
    opp_idx = np.flatnonzero(makes_opp & (opp_sec < horizon))
    closed = close_sec[opp_idx] < horizon
    won = closed & won_draw[opp_idx]
    changes.record(opp_idx, opp_sec[opp_idx], 4, "sales")
    changes.record(opp_idx[won], close_sec[opp_idx][won], 5, "sales")

    # --- ground truth: exact P(SQL ≤ 30 d), P(opportunity ≤ 90 d) given the latent state ------------
    if scenario is None:
        v30, p_opp_truth = exact_truth(hazard, q_opp, opp_delay_p, settings)
    else:  # per number of unshifted days at the start of the horizon
        v30, p_opp_truth = exact_truth_shifted(hazard, hazard_late, q_opp, opp_delay_p, settings)
    # a hand-over accepted after the cut-off leaves an SQL day past the history: the truth ends with it
    last_day = np.minimum(np.where(is_sql, sql_day, n_days - 1), n_days - 1)
    truth_len = np.maximum(last_day - created_day + 1, 0)
    start_ts = world.start_ts
    lead_ids = str_ids("L", lead0 + np.arange(n), world.lead_width)
    truth = truth_table(start_ts, lead_ids, state, created_day, truth_len, v30, p_opp_truth, shift_day)
    del state, v30, p_opp_truth

    # --- the block's tables --------------------------------------------------------------------------
    acc_ids = str_ids("C", counters.accounts + np.arange(n_acc), world.account_width)
    accounts = pd.DataFrame({
        "account_id": acc_ids, "name": names, "domain": domains, "industry": acc_industry,
        "employees": employees, "annual_revenue": revenue, "country": acc_country,
        "created_at": utc(start_ts, acc_created),
    })
    leads = pd.DataFrame({
        "lead_id": lead_ids,
        "account_id": _some_missing(acc_ids[np.maximum(lead_acc, 0)], lead_acc >= 0),
        "email_domain": email_domain, "job_title": titles, "seniority": crm_seniority,
        "department": crm_department, "country": country, "source": source,
        "created_at": utc(start_ts, created_sec),
        "owner": floor.owners(changes.seen_by_sales(n) & (life.stage != 0)),
    })
    t_lead, t_sec, t_kind = floor.touches(horizon)
    activities = activity_table(start_ts, lead_ids, type_names, settings.sales_activity_names,
                                (act_lead, act_sec, act_type), (t_lead, t_sec, t_kind),
                                first_ids=(counters.activities, counters.touches))
    stage_changes = changes.frame(start_ts, lead_ids)
    opportunities = pd.DataFrame({
        "opportunity_id": str_ids("O", counters.opportunities + np.arange(len(opp_idx)), world.opportunity_width),
        "lead_id": lead_ids[opp_idx],
        "account_id": _some_missing(acc_ids[np.maximum(lead_acc[opp_idx], 0)], lead_acc[opp_idx] >= 0),
        "created_at": utc(start_ts, opp_sec[opp_idx]),
        "stage": np.where(closed, np.where(won, "closed_won", "closed_lost"), "open"),
        "amount": amounts[opp_idx],
        "closed_at": utc(start_ts, np.where(closed, close_sec[opp_idx], 0)).where(closed),
        "is_won": pd.array(np.where(closed, won, False), dtype="boolean"),
    })
    opportunities.loc[~closed, "is_won"] = pd.NA
    counters.accounts += n_acc
    counters.activities += len(act_lead)
    counters.touches += len(t_lead)
    counters.opportunities += len(opp_idx)
    stats = {
        "leads": n, "accounts": n_acc, "activities": len(activities), "stage_changes": len(stage_changes),
        "opportunities": len(opp_idx), "won": int(won.sum()), "closed": int(closed.sum()),
        "mql_leads": changes.leads_reaching(MQL), "sql_leads": int(is_sql.sum()), "sales_touches": len(t_lead),
        "ground_truth_rows": int(truth_len.sum()),
    }
    return Block(
        tables={"accounts": accounts, "leads": leads, "activities": activities, "stage_changes": stage_changes,
                "opportunities": opportunities},
        truth=truth, stats=stats, handovers=floor.handovers(), calibration=Calibration(**solved),
    )
