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

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pandas as pd

from leadscore.features.actors import sales_rows
from leadscore.features.arrays import (
    DICT_MAX,
    NAT,
    FeatureInputError,
    Keys,
    column,
    csr_offsets,
    first_occurrence,
    fit_dictionary,
    key_codes,
    objects,
    surely_distinct,
    take_coded,
    take_str,
    text_categories,
    ts_us,
)
from leadscore.features.driver import driver, kernel_params
from leadscore.features.fit import fit_block
from leadscore.features.kernel import DAY_US, FAR, account_times, group_sort, is_sorted_by, parallel_chunks
from leadscore.features.plan import Plan, plan, rule_scores
from leadscore.features.registry import KernelInputs, registry

if TYPE_CHECKING:
    from leadscore.config import Settings
    from leadscore.history import CRMHistory

# --------------------------------------------------------------------------------------------------
# preparation
# --------------------------------------------------------------------------------------------------

#: from this many activities, type codes and account arrays are built on a second thread (prepare)
_OVERLAP_MIN = 200_000
T = TypeVar("T")
#: tiles (features.kernel.TILE moments each) a thread of the parallel kernel takes at a time
_TILES_PER_CHUNK = 4

@dataclass
class Prepared:
    """Everything the kernel needs, plus the per-lead fit features; built once per history."""

    leads: Keys
    fit_cat: list[np.ndarray]  # per FIT_CATEGORICAL column: object array over leads (str or NaN)
    fit_num: list[np.ndarray]  # per FIT_NUMERIC column: float64 over leads
    inputs: KernelInputs
    kernel: Any  # the generated driver module of the enabled families (features.driver)
    params: tuple[Any, ...]  # per family, what its kernel receives
    width: int
    #: per FIT_CATEGORICAL column, its :func:`fit_dictionary` (filled on first use)
    _fit_dicts: dict[int, tuple[np.ndarray, pd.CategoricalDtype]] = field(default_factory=dict, repr=False)

    def fit_codes(self, i: int) -> tuple[np.ndarray, pd.CategoricalDtype]:
        """FIT_CATEGORICAL column ``i`` as codes over leads into its text values: :func:`fit_dictionary`,
        once per history (each chunk of moments gathers its leads' codes; factorising the column per chunk
        hashed every lead's text again)."""
        got = self._fit_dicts.get(i)
        if got is None:
            got = self._fit_dicts[i] = fit_dictionary(self.fit_cat[i])
        return got

    # named views of the kernel arrays, for moments and labels
    @property
    def act_ptr(self) -> np.ndarray:
        return self.inputs.act_ptr

    @property
    def act_t(self) -> np.ndarray:
        return self.inputs.act_t

    @property
    def stg_ptr(self) -> np.ndarray:
        return self.inputs.stg_ptr

    @property
    def stg_t(self) -> np.ndarray:
        return self.inputs.stg_t

    @property
    def stg_code(self) -> np.ndarray:
        return self.inputs.stg_k


def _need(frame: pd.DataFrame, table: str, columns: list[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise FeatureInputError(f"{table}: missing column(s) {', '.join(missing)}")


@dataclass(frozen=True)
class Static:
    """What depends on the settings only (lookups, the kernel driver and its parameters), built once."""

    type_lookup: dict[str, int]
    type_index: pd.Index
    #: the lead's types then the sales touches' (``sales_activities``): one exact match finds both
    any_type_lookup: dict[str, int]
    any_type_index: pd.Index
    other: int
    stage_lookup: dict[str, int]
    stage_index: pd.Index
    stages: tuple[str, ...]
    high: np.ndarray
    kernel: Any
    params: tuple[Any, ...]
    width: int


def static(settings: Settings) -> Static:
    """The kernel's lookups and parameters for ``settings``, built once and kept with that object."""
    return settings.derived("features.static", _build_static)


def _build_static(settings: Settings) -> Static:
    names = settings.activity_names
    any_names = names + settings.sales_activity_names
    stages = settings.stages.all
    reg = registry(settings)
    return Static(
        type_lookup={n: i for i, n in enumerate(names)},
        type_index=pd.Index(names),
        any_type_lookup={n: i for i, n in enumerate(any_names)},
        any_type_index=pd.Index(any_names),
        other=names.index("other"),
        stage_lookup={n: i for i, n in enumerate(stages)},
        stage_index=pd.Index(stages),
        stages=tuple(stages),
        high=np.array([a.high_intent for a in settings.activities], dtype=np.bool_),
        kernel=driver(reg),
        params=kernel_params(reg),
        width=reg.width,
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
    # ---- activities ------------------------------------------------------------------------------
    # Sales touches are dropped here (features.actors) by masking the code arrays: a filtered copy of
    # the frame would copy every column, the properties' JSON text included, to read four of them.
    type_lookup, other = st.type_lookup, st.other
    raw_types = column(acts, "type")
    # A big history keeps a second thread busy: it matches the type names while this one matches the
    # lead ids (both in Arrow, without the GIL), then builds the account arrays (below).
    pool = ThreadPoolExecutor(1, thread_name_prefix="leadscore-prepare") if len(acts) >= _OVERLAP_MIN else None
    types = _start(pool, key_codes, raw_types, st.any_type_index, st.any_type_lookup)
    a_lead = lk.codes(column(acts, "lead_id"))
    a_type = types()
    sales = sales_rows(acts, settings, sales_type=a_type >= len(type_lookup))
    known = a_lead >= 0  # activities of leads not in this history cannot be attributed to anyone
    if sales is not None:
        known &= ~sales
    odd = np.flatnonzero((a_type < 0) & known)
    if len(odd):  # not canonical: normalise case/blanks, unknown → "other"
        raw = objects(raw_types)
        for i in odd:
            v = raw[i]
            a_type[i] = type_lookup.get(v.strip().lower(), other) if isinstance(v, str) else other
    a_t = ts_us(column(acts, "occurred_at"), "activities.occurred_at")
    missing = a_t == NAT
    if sales is not None:
        missing &= ~sales
    if missing.any():
        raise FeatureInputError(f"activities.occurred_at: {int(missing.sum())} missing timestamps")
    all_ids = column(acts, "activity_id")
    # distinct over all rows implies distinct over the kept ones: the ids are only gathered when not
    distinct = surely_distinct(all_ids)
    in_lead, in_type, in_t, in_rows = a_lead, a_type, a_t, known  # input order, for the account arrays
    # Per account, the sorted times of all its activities (and of the high-intent ones): built from the
    # kept rows in *input* order, so that time-ordered input (the usual export, the online cache) is
    # already sorted within each account; the lead-major order below would need a full sort. Only the
    # sorted times are kept, so the values are the same whichever order the rows arrive in. Numba
    # without the GIL: a big history builds them on the second thread while this one sorts the rows,
    # does the stage changes, the opportunities and the (Python) fit block. With distinct ids the kept
    # rows are known already, so they start before the sort.
    account_arrays = (_start(pool, account_times, in_lead, lead_acc, in_t, in_type, st.high, n_acc, in_rows)
                      if distinct else None)
    # (lead, time, type) order of the kept rows; time*K + type is exact in int64 for any real date
    sort_key = a_t * len(type_lookup) + a_type
    order: np.ndarray | None = None  # None: every row kept and in that order already (no sort, no gathers)
    if known.all() and is_sorted_by(a_lead, sort_key):
        act_ptr = csr_offsets(a_lead, n_leads)
    else:  # one stable sort of the kept rows' numbers, then one gather per array (features.kernel)
        order, act_ptr = group_sort(a_lead, sort_key, n_leads, known)
        a_type, a_t = a_type[order], a_t[order]
    del sort_key
    if distinct:
        keep = np.ones(len(a_t), dtype=bool)
    else:
        a_ids = all_ids if len(all_ids) >= DICT_MAX else objects(all_ids)
        keep = first_occurrence(a_ids if order is None else a_ids[order])
    if not keep.all():
        a_type, a_t = a_type[keep], a_t[keep]
        act_ptr = csr_offsets(np.repeat(np.arange(n_leads), np.diff(act_ptr))[keep], n_leads)
        in_rows = known.copy()
        in_rows[np.flatnonzero(~keep) if order is None else order[~keep]] = False
    act_k = a_type.astype(np.int32)
    if account_arrays is None:
        account_arrays = _start(pool, account_times, in_lead, lead_acc, in_t, in_type, st.high, n_acc, in_rows)
    if pool is not None:
        pool.shutdown(wait=False)  # the thread ends with its last task

    # ---- stage changes ---------------------------------------------------------------------------
    stages = st.stages
    s_lead = lk.codes(column(stg, "lead_id"))
    s_code = key_codes(column(stg, "stage"), st.stage_index, st.stage_lookup)
    bad = (s_code < 0) & (s_lead >= 0)
    if bad.any():
        vals = sorted({str(v) for v in objects(column(stg, "stage"))[bad]})[:5]
        raise FeatureInputError(f"stage_changes.stage: unknown stage(s) {vals} (known: {list(stages)})")
    s_t = ts_us(column(stg, "changed_at"), "stage_changes.changed_at")
    ok = (s_lead >= 0) & (s_t != NAT)
    s_lead, s_code, s_t = s_lead[ok], s_code[ok], s_t[ok]
    order = np.lexsort((s_code, s_t, s_lead))
    s_lead, s_code, s_t = s_lead[order], s_code[order], s_t[order]
    stg_ptr = csr_offsets(s_lead, n_leads)

    # ---- account-level arrays --------------------------------------------------------------------
    has = lead_acc >= 0
    l_acc, l_t = lead_acc[has], lead_created[has]
    order = np.lexsort((l_t, l_acc))
    accl_ptr, accl_t = csr_offsets(l_acc[order], n_acc), l_t[order]

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
        acco_ptr = csr_offsets(o_acc[order], n_acc)
        acco_created, acco_closed = o_created[order], o_closed[order]
    else:
        acco_ptr = np.zeros(n_acc + 1, dtype=np.int64)
        acco_created = acco_closed = np.zeros(0, dtype=np.int64)

    fit_cat, fit_num = fit_block(leads, accounts, lead_acc, settings, only)
    acca_ptr, acca_t, acch_ptr, acch_t = account_arrays()

    inputs = KernelInputs(
        act_ptr=act_ptr, act_t=a_t, act_k=act_k, act_day=a_t // DAY_US, stg_ptr=stg_ptr, stg_t=s_t,
        stg_k=s_code.astype(np.int32), lead_created=lead_created, lead_acc=lead_acc, accl_ptr=accl_ptr, accl_t=accl_t,
        acco_ptr=acco_ptr, acco_created=acco_created, acco_closed=acco_closed, acca_ptr=acca_ptr, acca_t=acca_t,
        acch_ptr=acch_ptr, acch_t=acch_t,
    )
    return Prepared(lk, fit_cat, fit_num, inputs, st.kernel, st.params, st.width)


def _start(pool: ThreadPoolExecutor | None, fn: Callable[..., T], *args: Any) -> Callable[[], T]:
    """``fn(*args)`` on the pool's thread (its result when called), or right here without a pool."""
    if pool is None:
        value = fn(*args)
        return lambda: value
    return pool.submit(fn, *args).result


def run(prep: Prepared, m_lead: np.ndarray, m_t: np.ndarray, parallel: bool = True) -> np.ndarray:
    """The kernel's output for moments ``(m_lead[i], m_t[i])`` (lead codes, µs): shape (width, n)."""
    out = np.empty((prep.width, len(m_lead)), dtype=np.float64)
    args = (out, np.ascontiguousarray(m_lead, dtype=np.int64), np.ascontiguousarray(m_t, dtype=np.int64),
            prep.inputs, prep.params)
    if not parallel or len(m_lead) <= 64:
        prep.kernel.run_serial(*args)
        return out
    # tiles handed out a few at a time as threads free up (a tile never depends on another)
    with parallel_chunks(_TILES_PER_CHUNK):
        prep.kernel.run_parallel(*args)
    return out


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


def feature_columns(prep: Prepared, p: Plan, m_lead: np.ndarray, m_t: np.ndarray,
                    moments: pd.DataFrame | None = None, coded: bool = False) -> dict[str, Any]:
    """``lead_id``, ``as_of``, every feature and ``rule_score`` as columns (numpy or ``str`` Series).

    ``moments``: the ``lead_id, as_of`` frame of these moments when the caller has it already (its
    columns are reused, not built a second time); without it they are built beside the kernel.
    ``coded``: the string features as categorical Series (:func:`take_coded`: the same values, as codes into
    a dictionary of the run) instead of ``str`` ones; batch scoring's encoding then remaps codes.
    """
    # The moment and fit columns read no kernel output: a big batch gathers them on a second thread
    # while the kernel runs (it releases the GIL), instead of after it.
    pool = ThreadPoolExecutor(1, thread_name_prefix="leadscore-columns") if len(m_lead) >= _OVERLAP_MIN else None
    gathered = _start(pool, _gathered_columns, prep, p, m_lead, m_t, moments, coded)
    out = run(prep, m_lead, m_t, parallel=True)
    data = gathered()
    if pool is not None:
        pool.shutdown(wait=False)
    for spec, (kind, i) in zip(p.schema, p.sources, strict=True):
        if kind in ("cat", "num"):
            data[spec.name] = data.pop(spec.name)  # in schema order
        elif kind == "code":
            codes = out[i].astype(np.int64)
            cats = p.categories[spec.name]
            data[spec.name] = (take_coded(text_categories(cats), codes) if coded
                               else take_str(np.array(cats, dtype=object), codes))
        else:
            data[spec.name] = out[i]
    data["rule_score"] = rule_scores(p, p.rule_points(out), data.__getitem__)
    return data


def _gathered_columns(prep: Prepared, p: Plan, m_lead: np.ndarray, m_t: np.ndarray,
                      moments: pd.DataFrame | None, coded: bool = False) -> dict[str, Any]:
    """``lead_id``, ``as_of`` and the fit features of each moment's lead (per-lead values gathered)."""
    cols: dict[str, Any] = {
        "lead_id": take_str(prep.leads.values, m_lead) if moments is None else moments["lead_id"],
        "as_of": (pd.Series(pd.to_datetime(m_t, unit="us", utc=True)).astype("datetime64[us, UTC]")
                  if moments is None else moments["as_of"]),
    }
    for spec, (kind, i) in zip(p.schema, p.sources, strict=True):
        if kind == "cat":
            codes, dtype = prep.fit_codes(i)
            cols[spec.name] = (take_coded(dtype, codes[m_lead]) if coded
                               else take_str(np.asarray(dtype.categories, dtype=object), codes[m_lead]))
        elif kind == "num":
            cols[spec.name] = prep.fit_num[i][m_lead]
    return cols


def compute_features(history: CRMHistory, moments: pd.DataFrame, settings: Settings,
                     prep: Prepared | None = None, coded: bool = False) -> pd.DataFrame:
    """Batch features: one row per moment, in order; see :func:`features.compute`. ``coded``: string
    features as categoricals (:func:`feature_columns`)."""
    p = plan(settings)
    prep = prep if prep is not None else prepare(history, settings)
    m_lead, m_t = moment_codes(prep, moments)
    return columns_frame(feature_columns(prep, p, m_lead, m_t, coded=coded))


def columns_frame(data: dict[str, Any]) -> pd.DataFrame:
    """A frame over the columns without copying them (one block per column, RangeIndex)."""
    frame = pd.DataFrame(data, copy=False)
    frame.index = pd.RangeIndex(len(frame))
    return frame
