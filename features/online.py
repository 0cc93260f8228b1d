"""The online entry: features and rule score of one lead at one moment, for the scoring API.

A lead's kernel inputs are a :class:`LeadArrays`: its activities (times and type codes, sorted), its
stage changes, its fit attributes, and its account's roll-up arrays (creation times of the account's
leads, its opportunities, the sorted times of its activities and of its high-intent ones). The event
store builds one straight from SQL rows or its in-memory cache (:mod:`leadscore.serving.store`), no
DataFrame involved; :func:`compute_one` builds one from a :class:`~leadscore.history.CRMHistory` through
the batch preparation (``engine.prepare``). Either way :func:`compute_arrays` lays it out as a
one-lead :class:`~leadscore.features.registry.KernelInputs` and runs the very kernel the batch
pipeline runs, so a lead scored online at time t gets bit-for-bit the row ``features.compute``
produces for ``(lead, t)`` in training.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from leadscore.features.arrays import FeatureInputError
from leadscore.features.engine import Prepared, plan, prepare, static
from leadscore.features.fit import fit_row, fit_rules
from leadscore.features.kernel import DAY_US, FAR
from leadscore.features.plan import rule_score_one
from leadscore.features.registry import KernelInputs
from leadscore.features.schema import FIT_CATEGORICAL

if TYPE_CHECKING:
    from leadscore.config import Settings
    from leadscore.history import CRMHistory

_EMPTY = np.zeros(0, dtype=np.int64)
_ZERO_PTR = np.zeros(1, dtype=np.int64)
#: the lead's and the account's columns that ``features.fit.fit_row`` reads, in its argument order
LEAD_FIT_COLUMNS = ("source", "job_title", "seniority", "department", "email_domain", "country")
ACCOUNT_FIT_COLUMNS = ("industry", "employees", "annual_revenue", "country")


@dataclass(frozen=True)
class AccountArrays:
    """What the account roll-ups read of the lead's account (times in µs, each array sorted).

    ``activity_t`` / ``high_t`` may hold every activity of the account's leads or only those of a
    window ending at the moment scored that is at least ``features.account_window_days`` long: the
    kernel counts the window by binary search, so rows outside it never change a value.
    """

    lead_created: np.ndarray  # creation times of the account's leads, this one included
    opp_created: np.ndarray  # its opportunities, ordered by (created, closed)
    opp_closed: np.ndarray  # FAR while open
    activity_t: np.ndarray  # all its leads' activities, this lead's included
    high_t: np.ndarray  # the high-intent ones


@dataclass(frozen=True)
class LeadArrays:
    """One lead's kernel inputs, in the layout of :class:`~leadscore.features.registry.KernelInputs`."""

    lead_id: str
    created: int  # µs
    act_t: np.ndarray  # int64, sorted by (time, type code), one row per activity id
    act_k: np.ndarray  # int32 catalogue position of each activity's type
    stg_t: np.ndarray  # int64, sorted by (time, stage code)
    stg_k: np.ndarray  # int32 position in ``stages.all``
    fit_cat: tuple[object, ...]  # FIT_CATEGORICAL values (str or NaN)
    fit_num: tuple[float, ...]  # FIT_NUMERIC values
    account: AccountArrays | None  # None: no account (the roll-ups are NaN)
    #: activities read to build this (own and colleagues'): what a concurrent write check counts again
    rows_read: int = 0


# --------------------------------------------------------------------------------------------------
# from stored values (the event store) to arrays
# --------------------------------------------------------------------------------------------------


def type_codes(names: Iterable[Any], settings: Settings) -> np.ndarray:
    """Catalogue positions of activity type names, as ``engine.prepare`` maps them (case and blanks
    normalised, unknown → ``other``)."""
    st = static(settings)
    lookup, other = st.type_lookup, st.other

    def code(v: Any) -> int:
        if not isinstance(v, str):
            return other
        c = lookup.get(v)
        return lookup.get(v.strip().lower(), other) if c is None else c

    return np.fromiter((code(v) for v in names), dtype=np.int32)


def stage_codes(names: Sequence[Any], settings: Settings) -> np.ndarray:
    """Positions in ``stages.all``; an unknown stage is refused as the batch path refuses it."""
    lookup = static(settings).stage_lookup
    bad = sorted({str(v) for v in names if v not in lookup})
    if bad:
        raise FeatureInputError(f"stage_changes.stage: unknown stage(s) {bad[:5]} (known: {list(lookup)})")
    return np.array([lookup[v] for v in names], dtype=np.int32)


def _value(v: Any) -> Any:
    return np.nan if v is None or v is pd.NA else v


def fit_values(lead: Mapping[str, Any], account: Mapping[str, Any] | None,
               settings: Settings) -> tuple[tuple[object, ...], tuple[float, ...]]:
    """The fit features of a lead from its stored row and its account's (``features.fit.fit_row``)."""
    acc = account or {}
    values = [_value(lead.get(c)) for c in LEAD_FIT_COLUMNS] + [_value(acc.get(c)) for c in ACCOUNT_FIT_COLUMNS]
    row = fit_row(*values, rules=fit_rules(settings))  # type: ignore[misc]  # ten values, positional
    n_cat = len(row) - 2
    return tuple(row[:n_cat]), tuple(float(v) for v in row[n_cat:])  # type: ignore[arg-type]


def sorted_activities(t: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Activities in the kernel's order: by time, then type code."""
    t = np.asarray(t, dtype=np.int64)
    k = np.asarray(k, dtype=np.int32)
    if len(t) > 1:
        order = np.lexsort((k, t))
        t, k = t[order], k[order]
    return np.ascontiguousarray(t), np.ascontiguousarray(k)


def opportunity_arrays(created: Sequence[int | None], closed: Sequence[int | None]) -> tuple[np.ndarray, np.ndarray]:
    """Opportunities ordered by (created, closed), an open one closing at ``FAR``; undated ones skipped."""
    pairs = [(c, FAR if d is None else d) for c, d in zip(created, closed, strict=True) if c is not None]
    if not pairs:
        return _EMPTY, _EMPTY
    arr = np.array(pairs, dtype=np.int64)
    order = np.lexsort((arr[:, 1], arr[:, 0]))
    return np.ascontiguousarray(arr[order, 0]), np.ascontiguousarray(arr[order, 1])


def rows_arrays(lead: Mapping[str, Any], account: Mapping[str, Any] | None,
                activities: Sequence[tuple[str, int, str, str]], settings: Settings) -> LeadArrays:
    """A lead sent whole as stored rows (``POST /score``): its row (``created_at`` in µs), its account's
    row or None, its activities as ``(activity_id, occurred_at µs, type, actor)``; no stage changes, no
    opportunities, and the account holds this lead only. As ``engine.prepare`` does, sales touches
    are dropped (:func:`features.actors.lead_side`: by actor or by type) and activities de-duplicated
    by id, keeping the earliest copy in (time, type) order."""
    sales = set(settings.sales_activity_names)
    activities = [a for a in activities if a[3] != "sales" and a[2] not in sales]
    ids = np.array([a[0] for a in activities], dtype=object)
    t = np.array([a[1] for a in activities], dtype=np.int64)
    k = type_codes([a[2] for a in activities], settings)
    if len(t) > 1:
        order = np.lexsort((k, t))
        _, first = np.unique(ids[order], return_index=True)
        keep = order[np.sort(first)]
        t, k = np.ascontiguousarray(t[keep]), np.ascontiguousarray(k[keep])
    created = int(lead["created_at"])
    fit_cat, fit_num = fit_values(lead, account, settings)
    acc = None if account is None else AccountArrays(
        np.array([created], dtype=np.int64), _EMPTY, _EMPTY, t, np.ascontiguousarray(t[static(settings).high[k]]))
    return LeadArrays(lead_id=str(lead["lead_id"]), created=created, act_t=t, act_k=k, stg_t=_EMPTY,
                      stg_k=np.zeros(0, dtype=np.int32), fit_cat=fit_cat, fit_num=fit_num, account=acc,
                      rows_read=len(t))


# --------------------------------------------------------------------------------------------------
# the kernel call on one lead's arrays
# --------------------------------------------------------------------------------------------------


def _as_of_us(as_of: pd.Timestamp | datetime | str) -> tuple[pd.Timestamp, int]:
    if isinstance(as_of, pd.Timestamp) and as_of.tzinfo is UTC and as_of.unit == "us":
        return as_of, as_of.value // 1000  # already what the conversion below returns
    ts = pd.Timestamp(as_of)
    if ts is pd.NaT or (isinstance(ts, float) and math.isnan(ts)):
        raise FeatureInputError("as_of: missing timestamp")
    ts = (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).as_unit("us")
    return ts, int(ts.asm8.astype("datetime64[us]").astype(np.int64))


def _ptr(n: int) -> np.ndarray:
    return np.array([0, n], dtype=np.int64)


def kernel_inputs(a: LeadArrays) -> KernelInputs:
    """The one-lead (and at most one-account) kernel inputs: lead code 0, account code 0."""
    acc = a.account
    if acc is None:
        acc_arrays: tuple[np.ndarray, ...] = (_ZERO_PTR, _EMPTY, _ZERO_PTR, _EMPTY, _EMPTY, _ZERO_PTR, _EMPTY,
                                              _ZERO_PTR, _EMPTY)
        lead_acc = -1
    else:
        acc_arrays = (_ptr(len(acc.lead_created)), acc.lead_created, _ptr(len(acc.opp_created)), acc.opp_created,
                      acc.opp_closed, _ptr(len(acc.activity_t)), acc.activity_t, _ptr(len(acc.high_t)), acc.high_t)
        lead_acc = 0
    return KernelInputs(_ptr(len(a.act_t)), a.act_t, a.act_k, a.act_t // DAY_US, _ptr(len(a.stg_t)), a.stg_t, a.stg_k,
                        np.array([a.created], dtype=np.int64), np.array([lead_acc], dtype=np.int64), *acc_arrays)


@dataclass(frozen=True)
class _RowLayout:
    """Where each schema column of a row comes from, as positions in one list: the kernel output column
    (``width`` values), then the fit categories, then the fit numbers; kernel category codes apart."""

    names: tuple[str, ...]
    take: tuple[int, ...]
    codes: tuple[tuple[str, int, tuple[str, ...]], ...]  # (name, kernel row, category of each code)


def _row_layout(settings: Settings) -> _RowLayout:
    st, p = static(settings), plan(settings)
    base = {"k": 0, "code": 0, "cat": st.width, "num": st.width + len(FIT_CATEGORICAL)}
    return _RowLayout(tuple(s.name for s in p.schema), tuple(base[kind] + i for kind, i in p.sources),
                      tuple((s.name, i, p.categories[s.name]) for s, (kind, i) in zip(p.schema, p.sources, strict=True)
                            if kind == "code"))


def compute_arrays(a: LeadArrays, as_of: Sequence[Any], settings: Settings) -> list[dict[str, object]]:
    """Feature rows of the lead at each moment of ``as_of`` (one kernel call), as :func:`compute_one`."""
    st, p = static(settings), plan(settings)
    layout = settings.derived("features.online.row_layout", _row_layout)
    stamps = [_as_of_us(t) for t in as_of]
    m_t = np.array([us for _, us in stamps], dtype=np.int64)
    out = np.empty((st.width, len(m_t)), dtype=np.float64)
    st.kernel.run_serial(out, np.zeros(len(m_t), dtype=np.int64), m_t, kernel_inputs(a), st.params)
    if len(a.fit_cat) != len(FIT_CATEGORICAL):
        raise FeatureInputError(f"{len(a.fit_cat)} fit categories for {len(FIT_CATEGORICAL)} columns")
    fit = [*a.fit_cat, *a.fit_num]
    rows: list[dict[str, object]] = []
    for r, (ts, _) in enumerate(stamps):
        vec = out[:, r].tolist()
        pool = vec + fit
        row: dict[str, object] = {"lead_id": a.lead_id, "as_of": ts}
        row.update(zip(layout.names, map(pool.__getitem__, layout.take), strict=True))
        for name, i, categories in layout.codes:
            c = int(vec[i])
            row[name] = categories[c] if c >= 0 else float("nan")
        row["rule_score"] = rule_score_one(p, vec[p.rule_row] if p.rule_row >= 0 else 0.0, row.__getitem__)
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------------
# from a CRM history (POST /score, notebooks, the parity tests)
# --------------------------------------------------------------------------------------------------


def arrays_of(prep: Prepared, lead_id: str) -> LeadArrays:
    """One lead's slices of a prepared history (``engine.prepare``)."""
    code = int(prep.leads.codes(np.array([lead_id], dtype=object))[0])
    if code < 0:
        raise FeatureInputError(f"lead_id {lead_id!r} is not in the history's leads table")
    x = prep.inputs

    def part(ptr: np.ndarray, values: np.ndarray, i: int) -> np.ndarray:
        return np.ascontiguousarray(values[ptr[i]:ptr[i + 1]])

    a = int(x.lead_acc[code])
    account = None if a < 0 else AccountArrays(
        part(x.accl_ptr, x.accl_t, a), part(x.acco_ptr, x.acco_created, a), part(x.acco_ptr, x.acco_closed, a),
        part(x.acca_ptr, x.acca_t, a), part(x.acch_ptr, x.acch_t, a))
    return LeadArrays(
        lead_id=lead_id, created=int(x.lead_created[code]), act_t=part(x.act_ptr, x.act_t, code),
        act_k=part(x.act_ptr, x.act_k, code), stg_t=part(x.stg_ptr, x.stg_t, code),
        stg_k=part(x.stg_ptr, x.stg_k, code), fit_cat=tuple(c[code] for c in prep.fit_cat),
        fit_num=tuple(float(c[code]) for c in prep.fit_num), account=account)


def compute_many(history: CRMHistory, lead_id: str, as_of: list[Any], settings: Settings) -> list[dict[str, object]]:
    """:func:`compute_one` for several moments of the same lead (one preparation, one kernel call)."""
    return compute_arrays(arrays_of(prepare(history, settings, only_lead=lead_id), lead_id), as_of, settings)


def compute_one(history: CRMHistory, lead_id: str, as_of: pd.Timestamp | datetime | str,
                settings: Settings) -> dict[str, object]:
    """Features of ``lead_id`` at ``as_of`` as ``{"lead_id", "as_of", <feature>..., "rule_score"}``.

    ``history`` should hold the lead, its account, that account's other leads, the lead's activities
    and stage changes, and the account's opportunities (more rows are harmless). The other leads'
    activities only feed the account roll-ups, so the caller may pass just those dated in the last
    ``features.account_window_days`` before ``as_of``.

    Values equal the batch row exactly: ``float`` for float64 features (NaN when undefined), ``str``
    or NaN for categorical ones, ``as_of`` as a UTC ``pd.Timestamp``. Rows dated after ``as_of`` are
    ignored. Raises :class:`~features.engine.FeatureInputError` naming the table/column on bad input.
    """
    return compute_many(history, lead_id, [as_of], settings)[0]
