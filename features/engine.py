"""From CRM tables to feature rows: array preparation, the kernel call, and the output frame.

:func:`prepare` turns a :class:`~leadscore.history.CRMHistory` into sorted, de-duplicated per-lead and
per-account arrays (CSR layout) once; :func:`run` evaluates any set of moments on them with the numba
kernel; :func:`compute_features` is the batch entry behind ``features.compute`` and
:func:`features.online.compute_one` is the single-lead entry. Both go through ``prepare`` → kernel
``_one`` → :func:`rule_scores`, so online and batch agree bit for bit.

Activities are ordered by (lead, time, type) and de-duplicated by ``activity_id`` keeping the first in
that order (the earliest copy), so shuffled or replayed input gives the same features as clean input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from leadscore.errors import DataError
from leadscore.features.fit import fit_row, fit_rules
from leadscore.features.kernel import (
    DAY_US,
    FAR,
    LN2,
    group_sort,
    hash_strings,
    layout,
    run_parallel,
    run_serial,
)
from leadscore.features.schema import (
    FIT_CATEGORICAL,
    FIT_NUMERIC,
    FeatureSpec,
    count_name,
    decay_name,
    feature_schema,
)

if TYPE_CHECKING:
    from leadscore.config import Settings
    from leadscore.history import CRMHistory

#: below this many rows, plain-Python lookups beat pandas' hashing setup (same results either way)
_SMALL = 4096
#: below this many values a dict lookup per value beats factorizing
_DICT_MAX = 512
NAT = np.iinfo(np.int64).min


class FeatureInputError(DataError):
    """The history or the moments cannot be used; the message names the table and column."""


# --------------------------------------------------------------------------------------------------
# small helpers: identical semantics for small and large inputs
# --------------------------------------------------------------------------------------------------


def column(frame: pd.DataFrame, name: str) -> Any:
    """The values of one column without building a Series (pandas' ``df[name]`` costs ~20 µs, which
    matters on the online path); falls back to the public API if the private accessor disappears."""
    getter = getattr(frame, "_get_column_array", None)
    if getter is not None:
        try:
            return getter(frame.columns.get_loc(name))
        except (TypeError, KeyError, AttributeError):
            pass
    return frame[name].array


def ts_us(values: Any, where: str) -> np.ndarray:
    """UTC timestamps as int64 microseconds (NaT → int64 min). Naive timestamps are taken as UTC."""
    arr = values.array if isinstance(values, pd.Series | pd.Index) else values
    dtype = getattr(arr, "dtype", None)
    if not (isinstance(dtype, pd.DatetimeTZDtype) or (isinstance(dtype, np.dtype) and dtype.kind == "M")):
        try:
            arr = pd.to_datetime(pd.Series(arr), utc=True, format="mixed").array
        except (ValueError, TypeError) as exc:
            raise FeatureInputError(f"{where}: not a timestamp column ({exc})") from exc
    if isinstance(arr, np.ndarray):
        arr = pd.array(arr)
    if getattr(arr, "unit", "us") != "us":
        arr = arr.as_unit("us")
    return np.asarray(arr.asi8, dtype=np.int64)


def objects(values: Any) -> np.ndarray:
    """Any column as an object array (strings stay ``str``, missing values become NaN)."""
    if isinstance(values, np.ndarray) and values.dtype == object:
        return values
    out = np.asarray(values.to_numpy(dtype=object) if hasattr(values, "to_numpy") else values, dtype=object)
    return out


def _codes(values: Any, keys: pd.Index | None, lookup: dict[Any, int] | None) -> np.ndarray:
    """Position of each value among the keys (-1 when absent or missing).

    Small inputs go through the dict; larger ones are factorized first (hashing each distinct value
    once, which is what pyarrow-backed strings do fastest) and only the distinct values are looked up.
    """
    n = len(values)
    if lookup is not None and n < _DICT_MAX:
        vals = objects(values)
        return np.fromiter((lookup.get(v, -1) if isinstance(v, str) else -1 for v in vals), dtype=np.int64, count=n)
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    if lookup is not None and len(uniques) < _SMALL:
        mapped = np.fromiter((lookup.get(u, -1) for u in objects(uniques)), dtype=np.int64, count=len(uniques))
    else:
        if keys is None:
            keys = pd.Index(list(lookup or {}))
        mapped = np.asarray(keys.get_indexer(uniques), dtype=np.int64)
    out = np.full(n, -1, dtype=np.int64)
    ok = codes >= 0
    out[ok] = mapped[codes[ok]]
    return out


def _csr(sorted_codes: np.ndarray, n: int) -> np.ndarray:
    """Row pointers of a CSR layout for codes already sorted ascending (all in ``0..n-1``)."""
    ptr = np.zeros(n + 1, dtype=np.int64)
    if len(sorted_codes):
        np.cumsum(np.bincount(sorted_codes, minlength=n), out=ptr[1:])
    return ptr


def surely_distinct(ids: Any) -> bool:
    """True when the ids are provably all distinct (distinct 64-bit hashes of an Arrow string column).

    False means "maybe not" and the caller de-duplicates exactly. This keeps the common case (ids
    already unique, as ``load_history`` guarantees) at a hash and a sort instead of a 10M-entry hash
    table of strings.
    """
    import pyarrow as pa

    arr = getattr(ids, "_pa_array", None)
    if arr is None or len(ids) < _DICT_MAX:
        return False
    chunks = arr.chunks if isinstance(arr, pa.ChunkedArray) else [arr]
    hashes = np.empty(len(ids), dtype=np.uint64)
    pos = 0
    for c in chunks:
        if c.null_count or not (pa.types.is_string(c.type) or pa.types.is_large_string(c.type)):
            return False
        bufs = c.buffers()
        width = np.int64 if pa.types.is_large_string(c.type) else np.int32
        offsets = np.frombuffer(bufs[1], dtype=width)[c.offset:c.offset + len(c) + 1].astype(np.int64)
        data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(1, dtype=np.uint8)
        hash_strings(offsets, data, hashes[pos:pos + len(c)])
        pos += len(c)
    hashes.sort()
    return not bool(np.any(hashes[1:] == hashes[:-1]))


def _first_occurrence(ids: Any) -> np.ndarray:
    """Mask keeping the first row of each id (ids in the order that defines "first")."""
    n = len(ids)
    if n < _DICT_MAX:
        seen: set[object] = set()
        keep = np.ones(n, dtype=bool)
        for i, v in enumerate(objects(ids)):
            if v in seen:
                keep[i] = False
            else:
                seen.add(v)
        return keep
    codes, uniques = pd.factorize(ids, use_na_sentinel=False)
    if len(uniques) == n:
        return np.ones(n, dtype=bool)
    keep = np.zeros(n, dtype=bool)
    keep[np.unique(codes, return_index=True)[1]] = True
    return keep


@dataclass
class Keys:
    """Ids of a table and how to find them: a dict for small tables, a pandas Index for big ones."""

    values: np.ndarray
    lookup: dict[Any, int] | None
    index: pd.Index | None

    @classmethod
    def build(cls, raw: Any, where: str) -> Keys:
        vals = objects(raw)
        if len(vals) < _SMALL:
            lookup: dict[Any, int] = {}
            for i, v in enumerate(vals):
                if not isinstance(v, str):
                    raise FeatureInputError(f"{where}: missing id in row {i}")
                if v in lookup:
                    raise FeatureInputError(f"{where}: duplicate id {v!r}")
                lookup[v] = i
            return cls(vals, lookup, None)
        index = pd.Index(raw)
        if index.hasnans:
            raise FeatureInputError(f"{where}: missing ids")
        if not index.is_unique:
            raise FeatureInputError(f"{where}: duplicate ids {index[index.duplicated()].unique()[:5].tolist()}")
        return cls(vals, None, index)

    def codes(self, values: Any) -> np.ndarray:
        return _codes(values, self.index, self.lookup)

    def __len__(self) -> int:
        return len(self.values)


# --------------------------------------------------------------------------------------------------
# preparation
# --------------------------------------------------------------------------------------------------


@dataclass
class Prepared:
    """Everything the kernel needs, plus the per-lead fit features; built once per history."""

    leads: Keys
    fit_cat: list[np.ndarray]  # per FIT_CATEGORICAL column: object array over leads (str or NaN)
    fit_num: list[np.ndarray]  # per FIT_NUMERIC column: float64 over leads
    arrays: tuple[np.ndarray, ...]
    scalars: tuple[int, float, int, int, int, int]
    offsets: np.ndarray
    width: int

    # named views of the kernel arrays, for moments and labels
    @property
    def act_ptr(self) -> np.ndarray:
        return self.arrays[0]

    @property
    def act_t(self) -> np.ndarray:
        return self.arrays[1]

    @property
    def stg_ptr(self) -> np.ndarray:
        return self.arrays[4]

    @property
    def stg_t(self) -> np.ndarray:
        return self.arrays[5]

    @property
    def stg_code(self) -> np.ndarray:
        return self.arrays[6]


def _need(frame: pd.DataFrame, table: str, columns: list[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise FeatureInputError(f"{table}: missing column(s) {', '.join(missing)}")


def _fit_block(leads: pd.DataFrame, accounts: pd.DataFrame, lead_acc: np.ndarray, settings: Settings,
               only: int | None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per-lead fit features via :func:`features.fit.fit_row` (``only``: just that lead, others NaN)."""
    rules = fit_rules(settings)
    n = len(leads)
    rows_idx = np.arange(n) if only is None else np.array([only])

    def pick(frame: pd.DataFrame, name: str, rows: np.ndarray) -> np.ndarray:
        out = np.full(len(rows), np.nan, dtype=object)
        ok = rows >= 0
        if name not in frame.columns or not ok.any():
            return out
        values = column(frame, name)
        if len(rows) == 1:  # online: one scalar read instead of converting the whole column
            v = values[int(rows[0])]
            out[0] = np.nan if v is pd.NA or v is None else v
        else:
            out[ok] = objects(values)[rows[ok]]
        return out

    acc = lead_acc[rows_idx]

    def lcol(name: str) -> np.ndarray:
        return pick(leads, name, rows_idx)

    def acol(name: str) -> np.ndarray:
        return pick(accounts, name, acc)

    cols = [lcol("source"), lcol("job_title"), lcol("seniority"), lcol("department"), lcol("email_domain"),
            lcol("country"), acol("industry"), acol("employees"), acol("annual_revenue"), acol("country")]
    rows = [fit_row(*vals, rules=rules) for vals in zip(*cols, strict=True)]  # type: ignore[misc]
    n_cat = len(FIT_CATEGORICAL)
    fit_cat: list[np.ndarray] = []
    fit_num: list[np.ndarray] = []
    for i in range(n_cat + len(FIT_NUMERIC)):
        if i < n_cat:
            col = np.full(n, np.nan, dtype=object)
            col[rows_idx] = [r[i] for r in rows]
            fit_cat.append(col)
        else:
            num = np.full(n, np.nan, dtype=np.float64)
            num[rows_idx] = np.array([r[i] for r in rows], dtype=np.float64)
            fit_num.append(num)
    return fit_cat, fit_num


@dataclass(frozen=True)
class Static:
    """What depends on the settings only (lookups, kernel parameters), computed once per settings."""

    type_lookup: dict[str, int]
    type_index: pd.Index
    other: int
    stage_lookup: dict[str, int]
    stage_index: pd.Index
    stages: tuple[str, ...]
    recycled: int
    high: np.ndarray
    params: tuple[np.ndarray, ...]
    scalars: tuple[int, float, int, int, int, int]
    offsets: np.ndarray
    width: int


def static(settings: Settings) -> Static:
    """The kernel's lookups and parameters for ``settings``, built once and kept with that object."""
    return settings.derived("features.static", _build_static)


def _build_static(settings: Settings) -> Static:
    names = settings.activity_names
    stages = settings.stages.all
    fc, rc = settings.features, settings.rules
    points = np.array([float(rc.activity_points.get(n, 0.0)) for n in names], dtype=np.float64)
    win_us = np.array([int(w) * DAY_US for w in fc.windows_days], dtype=np.int64)
    hl_inv = np.array([LN2 / float(h) for h in fc.half_lives_days], dtype=np.float64)
    high = np.array([a.high_intent for a in settings.activities], dtype=np.bool_)
    rule_win = int(rc.window_days) * DAY_US if rc.window_days else FAR
    rule_hl_inv = LN2 / float(rc.half_life_days) if rc.half_life_days else 0.0
    recycled = stages.index("recycled") if "recycled" in stages else -2
    lay = layout(len(names), len(win_us), len(hl_inv))
    return Static(
        type_lookup={n: i for i, n in enumerate(names)},
        type_index=pd.Index(names),
        other=names.index("other"),
        stage_lookup={n: i for i, n in enumerate(stages)},
        stage_index=pd.Index(stages),
        stages=tuple(stages),
        recycled=recycled,
        high=high,
        params=(high, points, win_us, hl_inv),
        scalars=(int(rule_win), float(rule_hl_inv), int(fc.velocity_recent_days) * DAY_US,
                 int(fc.velocity_base_days) * DAY_US, int(recycled), len(names)),
        offsets=np.array(list(lay.values()), dtype=np.int64),
        width=int(lay["width"]),  # type: ignore[arg-type]
    )


def prepare(history: CRMHistory, settings: Settings, only_lead: str | None = None) -> Prepared:
    """Sort, de-duplicate and index the history for the kernel (see the module docstring).

    ``only_lead`` (the online path) computes fit features for that lead only; every array the kernel
    reads is built exactly as in the batch path.
    """
    leads, acts, stg = history.leads, history.activities, history.stage_changes
    accounts, opps = history.accounts, history.opportunities
    _need(leads, "leads", ["lead_id", "created_at"])
    _need(acts, "activities", ["activity_id", "lead_id", "occurred_at", "type"])
    _need(stg, "stage_changes", ["lead_id", "stage", "changed_at"])
    st = static(settings)
    lk = Keys.build(column(leads, "lead_id"), "leads.lead_id")
    n_leads = len(lk)
    lead_created = ts_us(column(leads, "created_at"), "leads.created_at")
    if (lead_created == NAT).any():
        raise FeatureInputError("leads.created_at: missing timestamps")
    only: int | None = None
    if only_lead is not None:
        only = int(lk.codes(np.array([only_lead], dtype=object))[0])
        if only < 0:
            raise FeatureInputError(f"lead_id {only_lead!r} is not in the history's leads table")

    # ---- accounts and fit features ---------------------------------------------------------------
    if len(accounts) and "account_id" in accounts.columns:
        ids = objects(column(accounts, "account_id"))
        if len(ids) != len(set(ids)):  # first row of an id wins, as everywhere else
            accounts = accounts.drop_duplicates("account_id").reset_index(drop=True)
        missing = pd.isna(objects(column(accounts, "account_id")))
        if missing.any():  # an account without id cannot be referenced by any lead
            accounts = accounts[~missing].reset_index(drop=True)
        ak = Keys.build(column(accounts, "account_id"), "accounts.account_id")
    else:
        ak = Keys(np.zeros(0, dtype=object), {}, None)
    n_acc = len(ak)
    lead_acc = (ak.codes(column(leads, "account_id")) if "account_id" in leads.columns and n_acc
                else np.full(n_leads, -1, dtype=np.int64))
    fit_cat, fit_num = _fit_block(leads, accounts, lead_acc, settings, only)

    # ---- activities ------------------------------------------------------------------------------
    type_lookup, other = st.type_lookup, st.other
    a_lead = lk.codes(column(acts, "lead_id"))
    raw_types = column(acts, "type")
    a_type = _codes(raw_types, st.type_index, type_lookup)
    if (a_type < 0).any():  # not canonical: normalise case/blanks, unknown → "other"
        raw = objects(raw_types)
        for i in np.flatnonzero(a_type < 0):
            v = raw[i]
            a_type[i] = type_lookup.get(v.strip().lower(), other) if isinstance(v, str) else other
    a_t = ts_us(column(acts, "occurred_at"), "activities.occurred_at")
    if (a_t == NAT).any():
        raise FeatureInputError(f"activities.occurred_at: {int((a_t == NAT).sum())} missing timestamps")
    a_ids = column(acts, "activity_id")
    if len(a_ids) < _DICT_MAX:
        a_ids = objects(a_ids)
    known = a_lead >= 0  # activities of leads not in this history cannot be attributed to anyone
    if not known.all():
        idx = np.flatnonzero(known)
        a_lead, a_type, a_t, a_ids = a_lead[idx], a_type[idx], a_t[idx], a_ids[idx]
    # (lead, time, type) order; time*K + type is exact in int64 for any real date
    order, act_ptr = group_sort(a_lead, a_t * len(type_lookup) + a_type, n_leads)
    in_lead, in_type, in_t = a_lead, a_type, a_t  # input order, for the account arrays below
    a_lead, a_type, a_t = a_lead[order], a_type[order], a_t[order]
    keep = np.ones(len(order), dtype=bool) if surely_distinct(a_ids) else _first_occurrence(a_ids[order])
    if not keep.all():
        a_lead, a_type, a_t = a_lead[keep], a_type[keep], a_t[keep]
        act_ptr = _csr(a_lead, n_leads)
        kept = np.sort(order[keep])
        in_lead, in_type, in_t = in_lead[kept], in_type[kept], in_t[kept]
    act_k = a_type.astype(np.int32)

    # ---- stage changes ---------------------------------------------------------------------------
    stages = st.stages
    s_lead = lk.codes(column(stg, "lead_id"))
    s_code = _codes(column(stg, "stage"), st.stage_index, st.stage_lookup)
    bad = (s_code < 0) & (s_lead >= 0)
    if bad.any():
        vals = sorted({str(v) for v in objects(column(stg, "stage"))[bad]})[:5]
        raise FeatureInputError(f"stage_changes.stage: unknown stage(s) {vals} (known: {list(stages)})")
    s_t = ts_us(column(stg, "changed_at"), "stage_changes.changed_at")
    ok = (s_lead >= 0) & (s_t != NAT)
    s_lead, s_code, s_t = s_lead[ok], s_code[ok], s_t[ok]
    order = np.lexsort((s_code, s_t, s_lead))
    s_lead, s_code, s_t = s_lead[order], s_code[order], s_t[order]
    stg_ptr = _csr(s_lead, n_leads)

    # ---- account-level arrays --------------------------------------------------------------------
    has = lead_acc >= 0
    l_acc, l_t = lead_acc[has], lead_created[has]
    order = np.lexsort((l_t, l_acc))
    accl_ptr, accl_t = _csr(l_acc[order], n_acc), l_t[order]

    if len(opps) and {"lead_id", "created_at"} <= set(opps.columns) and n_acc:
        o_lead = lk.codes(column(opps, "lead_id"))
        o_acc = (ak.codes(column(opps, "account_id")) if "account_id" in opps.columns
                 else np.full(len(opps), -1, dtype=np.int64))
        via_lead = np.where(o_lead >= 0, lead_acc[np.maximum(o_lead, 0)], -1)
        o_acc = np.where(o_acc >= 0, o_acc, via_lead)
        o_created = ts_us(column(opps, "created_at"), "opportunities.created_at")
        o_closed = (ts_us(column(opps, "closed_at"), "opportunities.closed_at") if "closed_at" in opps.columns
                    else np.full(len(opps), NAT, dtype=np.int64))
        o_closed = np.where(o_closed == NAT, FAR, o_closed)
        ok = (o_acc >= 0) & (o_created != NAT)
        o_acc, o_created, o_closed = o_acc[ok], o_created[ok], o_closed[ok]
        order = np.lexsort((o_closed, o_created, o_acc))
        acco_ptr = _csr(o_acc[order], n_acc)
        acco_created, acco_closed = o_created[order], o_closed[order]
    else:
        acco_ptr = np.zeros(n_acc + 1, dtype=np.int64)
        acco_created = acco_closed = np.zeros(0, dtype=np.int64)

    # Per account, the sorted times of all its activities (and of the high-intent ones): built from the
    # kept rows in *input* order, so that time-ordered input (the usual export, the online cache) is
    # already sorted within each account; the lead-major order above would need a full sort. Only the
    # sorted times are kept, so the values are the same whichever order the rows arrive in.
    high = st.high
    x_acc = lead_acc[in_lead]
    in_acc = x_acc >= 0
    x_acc, x_t, x_hi = x_acc[in_acc], in_t[in_acc], high[in_type[in_acc]]
    order, acca_ptr = group_sort(x_acc, x_t, n_acc)
    acca_t = x_t[order]
    hi_idx = order[x_hi[order]]
    acch_ptr, acch_t = _csr(x_acc[hi_idx], n_acc), x_t[hi_idx]

    arrays = (
        act_ptr, a_t, act_k, a_t // DAY_US, stg_ptr, s_t, s_code.astype(np.int32), lead_created, lead_acc,
        accl_ptr, accl_t, acco_ptr, acco_created, acco_closed, acca_ptr, acca_t, acch_ptr, acch_t,
        *st.params,
    )
    return Prepared(lk, fit_cat, fit_num, arrays, st.scalars, st.offsets, st.width)


def run(prep: Prepared, m_lead: np.ndarray, m_t: np.ndarray, parallel: bool = True) -> np.ndarray:
    """The kernel's output for moments ``(m_lead[i], m_t[i])`` (lead codes, µs): shape (width, n)."""
    out = np.empty((prep.width, len(m_lead)), dtype=np.float64)
    fn: Any = run_parallel if parallel and len(m_lead) > 64 else run_serial
    fn(out, np.ascontiguousarray(m_lead, dtype=np.int64), np.ascontiguousarray(m_t, dtype=np.int64),
       *prep.arrays, *prep.scalars, prep.offsets)
    return out


# --------------------------------------------------------------------------------------------------
# from the kernel's layout to the schema's columns
# --------------------------------------------------------------------------------------------------


def interest_columns(settings: Settings) -> dict[str, int]:
    """Schema name → column of the kernel output, for every float64 interest feature."""
    fc = settings.features
    names = settings.activity_names
    nw, nh = len(fc.windows_days), len(fc.half_lives_days)
    o = layout(len(names), nw, nh)
    m: dict[str, int] = {}

    def at(block: str, i: int = 0) -> int:
        base = o[block]
        assert isinstance(base, int)
        return base + i

    for k, a in enumerate(names):
        for w, days in enumerate(fc.windows_days):
            m[count_name(a, days)] = at("cnt", k * nw + w)
        for h, hl in enumerate(fc.half_lives_days):
            m[decay_name(a, hl)] = at("dec", k * nh + h)
    for w, days in enumerate(fc.windows_days):
        suffix = count_name("x", days)[len("n_x_"):]
        m[f"n_total_{suffix}"] = at("tot_cnt", w)
        m[f"n_high_intent_{suffix}"] = at("hi_cnt", w)
        m[f"active_days_{suffix}"] = at("active", w)
    for h, hl in enumerate(fc.half_lives_days):
        m[f"decay_total_{decay_name('x', hl)[len('decay_x_'):]}"] = at("tot_dec", h)
    m["n_activities_total"] = at("n_all")
    for k, a in enumerate(names):
        m[f"n_{a}_total"] = at("tot_k", k)
    m["days_since_last_activity"] = at("days_last")
    m["days_since_last_high_intent"] = at("days_last_hi")
    m["days_since_first_activity"] = at("days_first")
    m[f"velocity_{fc.velocity_recent_days}_{fc.velocity_base_days}"] = at("velocity")
    m["times_recycled"] = at("recycled")
    m["days_in_stage"] = at("days_in_stage")
    m["days_since_created"] = at("days_created")
    m["account_n_leads"] = at("acc_n_leads")
    m["account_has_open_opportunity"] = at("acc_open")
    m["account_had_opportunity"] = at("acc_had")
    m["account_other_leads_activities_30d"] = at("acc_other_30")
    m["account_other_leads_high_intent_30d"] = at("acc_other_hi_30")
    return m


@dataclass(frozen=True)
class Plan:
    """How each schema column is produced, resolved once per settings object."""

    schema: list[FeatureSpec]
    sources: list[tuple[str, int]]  # ("cat", i) fit categorical | ("num", i) fit numeric | ("k", col) kernel
    stage_col: int
    rule_col: int
    stages: tuple[str, ...]
    rules: tuple[tuple[str, frozenset[str] | None, float, float, float], ...]


def plan(settings: Settings) -> Plan:
    """How each schema column is produced for ``settings``, resolved once and kept with that object."""
    return settings.derived("features.plan", _build_plan)


def _build_plan(settings: Settings) -> Plan:
    schema = feature_schema(settings)
    kcols = interest_columns(settings)
    lay = layout(len(settings.activity_names), len(settings.features.windows_days),
                 len(settings.features.half_lives_days))
    sources: list[tuple[str, int]] = []
    for spec in schema:
        if spec.name in FIT_CATEGORICAL:
            sources.append(("cat", FIT_CATEGORICAL.index(spec.name)))
        elif spec.name in FIT_NUMERIC:
            sources.append(("num", FIT_NUMERIC.index(spec.name)))
        elif spec.name == "current_stage":
            sources.append(("stage", 0))
        else:
            sources.append(("k", kcols[spec.name]))
    by_name = {s.name: s for s in schema}
    rules = []
    for r in settings.rules.attribute_points:
        if r.field not in by_name:
            raise FeatureInputError(
                f"rules.attribute_points: field {r.field!r} is not a feature (known: {sorted(by_name)})")
        values = frozenset(str(v) for v in r.values) if r.values is not None else None
        lo = float(r.min) if r.min is not None else -np.inf
        hi = float(r.max) if r.max is not None else np.inf
        rules.append((r.field, values, lo, hi, float(r.points)))
    return Plan(schema, sources, int(lay["stage_code"]), int(lay["rule_act"]),  # type: ignore[arg-type]
                tuple(settings.stages.all), tuple(rules))


def rule_scores(p: Plan, rule_act: np.ndarray, column: Any) -> np.ndarray:
    """Activity points (from the kernel) plus attribute points, in config order.

    ``column(name)`` returns a feature's values for the moments: a pandas ``str`` Series or an object
    array for categories, float64 otherwise. Membership is exact string equality (NaN is never a
    member) on either; the float additions are the same numpy operations for one moment or a million,
    hence the same bits.
    """
    score = rule_act.astype(np.float64, copy=True)
    for field, values, lo, hi, pts in p.rules:
        v = column(field)
        if values is not None and isinstance(v, pd.Series):
            mask = v.isin(sorted(values)).to_numpy(dtype=bool)
        elif values is not None and v.dtype == object:
            mask = np.fromiter((isinstance(x, str) and x in values for x in v), dtype=bool, count=len(v))
        elif values is not None:
            mask = np.fromiter((f"{x:g}" in values for x in v), dtype=bool, count=len(v))
        else:
            vf = np.asarray(v, dtype=np.float64)
            with np.errstate(invalid="ignore"):
                mask = (vf >= lo) & (vf <= hi)
        score = score + np.where(mask, pts, 0.0)
    return score


def moment_codes(prep: Prepared, moments: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Lead codes and µs times of ``moments``; a clear error for unknown leads or missing times."""
    _need(moments, "moments", ["lead_id", "as_of"])
    m_lead = prep.leads.codes(column(moments, "lead_id"))
    if (m_lead < 0).any():
        bad = pd.Series(moments["lead_id"]).iloc[np.flatnonzero(m_lead < 0)[:5]].tolist()
        raise FeatureInputError(f"moments.lead_id: {int((m_lead < 0).sum())} unknown lead id(s), e.g. {bad}")
    m_t = ts_us(column(moments, "as_of"), "moments.as_of")
    if (m_t == NAT).any():
        raise FeatureInputError(f"moments.as_of: {int((m_t == NAT).sum())} missing timestamps")
    return m_lead, m_t


def _take_str(values: np.ndarray, idx: np.ndarray) -> pd.Series:
    """``values[idx]`` as a pandas ``str`` Series (NaN where idx < 0 or the value is missing).

    Gathering through pyarrow avoids materialising a million Python strings (~20x faster).
    """
    import pyarrow as pa

    table = pa.array([v if isinstance(v, str) else None for v in values], type=pa.large_string())
    taken = table.take(pa.array(idx, mask=idx < 0))
    return pd.Series(pd.array(taken, dtype="str"))


def feature_columns(prep: Prepared, p: Plan, m_lead: np.ndarray, m_t: np.ndarray) -> dict[str, Any]:
    """``lead_id``, ``as_of``, every feature and ``rule_score`` as columns (numpy or ``str`` Series)."""
    out = run(prep, m_lead, m_t, parallel=True)
    data: dict[str, Any] = {
        "lead_id": _take_str(prep.leads.values, m_lead),
        "as_of": pd.Series(pd.to_datetime(m_t, unit="us", utc=True)).astype("datetime64[us, UTC]"),
    }
    for spec, (kind, i) in zip(p.schema, p.sources, strict=True):
        if kind == "cat":
            codes, uniques = pd.factorize(prep.fit_cat[i], use_na_sentinel=True)
            data[spec.name] = _take_str(np.asarray(uniques, dtype=object), codes[m_lead])
        elif kind == "num":
            data[spec.name] = prep.fit_num[i][m_lead]
        elif kind == "stage":
            data[spec.name] = _take_str(np.array(p.stages, dtype=object), out[p.stage_col].astype(np.int64))
        else:
            data[spec.name] = out[i]
    data["rule_score"] = rule_scores(p, out[p.rule_col], data.__getitem__)
    return data


def compute_features(history: CRMHistory, moments: pd.DataFrame, settings: Settings,
                     prep: Prepared | None = None) -> pd.DataFrame:
    """Batch features: one row per moment, in order; see :func:`features.compute`."""
    p = plan(settings)
    prep = prep if prep is not None else prepare(history, settings)
    m_lead, m_t = moment_codes(prep, moments)
    return columns_frame(feature_columns(prep, p, m_lead, m_t))


def columns_frame(data: dict[str, Any]) -> pd.DataFrame:
    """A frame over the columns without copying them (one block per column, RangeIndex)."""
    frame = pd.DataFrame(data, copy=False)
    frame.index = pd.RangeIndex(len(frame))
    return frame
