"""The scoring read: one lead's feature-kernel inputs straight from the event store, no DataFrame.

:func:`read_lead` reads what the features of ``(lead, as_of)`` read, up to ``as_of``: the lead's row,
activities (time, type) and stage changes; its account's row, leads (creation times), opportunities
and the account's activities in the roll-up window; and lays them out as a
:class:`~leadscore.features.online.LeadArrays` (sorted numpy arrays, catalogue codes), the layout the
kernel reads. With the activity cache (SQLite, :mod:`leadscore.serving.cache`) the activities and the
account's leads come from memory, brought up to date with the store first. Every statement is
SQLAlchemy Core compiled once per dialect (:mod:`leadscore.serving.queries`) and hits an index.
``tests/test_store_features.py`` checks the features of this read against the batch features of the
full history, bit for bit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sqlalchemy.engine import Connection

from leadscore.features.engine import static
from leadscore.features.kernel import DAY_US
from leadscore.features.online import (
    AccountArrays,
    LeadArrays,
    fit_values,
    opportunity_arrays,
    sorted_activities,
    stage_codes,
    type_codes,
)
from leadscore.serving.store_tables import to_micros

if TYPE_CHECKING:
    from leadscore.config import Settings
    from leadscore.serving.store import EventStore


def window_us(store: EventStore, settings: Settings) -> int:
    """How far back colleagues' activities are read: the store's window (the features' plus a day of
    margin, which ``serving.rescore`` counts again), refusing a store opened for a shorter one."""
    need = settings.features.account_window_days * DAY_US
    if store.colleague_window_us < need:
        raise ValueError(f"the event store reads {store.colleague_window_us // DAY_US} days of colleagues' activity, "
                         f"features.account_window_days is {settings.features.account_window_days}: open it with "
                         f"account_window_days={settings.features.account_window_days}")
    return store.colleague_window_us


def _ints(values: list[Any]) -> np.ndarray:
    return np.array(values, dtype=np.int64) if values else np.zeros(0, dtype=np.int64)


def read_lead(store: EventStore, conn: Connection, lead_id: str, as_of: pd.Timestamp,
              settings: Settings) -> LeadArrays:
    """The kernel inputs of ``(lead_id, as_of)`` (module docstring); ``KeyError`` for an unknown lead."""
    return read_lead_marked(store, conn, lead_id, as_of, settings)[0]


def read_lead_marked(store: EventStore, conn: Connection, lead_id: str, as_of: pd.Timestamp,
                     settings: Settings) -> tuple[LeadArrays, int]:
    """:func:`read_lead`, and what a check that the score is still current compares with: with the
    activity cache, the store's activity rowid mark the arrays were read at (every activity committed up
    to it is in them); without, the activities read (:func:`leadscore.serving.rescore.still_current`)."""
    cut = to_micros(as_of)
    q = store.q
    row = q.lead_and_account.first(conn, lead_id=lead_id)
    if row is None:
        raise KeyError(lead_id)
    n = len(q.lead_columns)
    lead = dict(zip(q.lead_columns, row[:n], strict=True))
    account_id = lead["account_id"]
    # no account, or one without a row (its key reads NULL): no roll-ups (as the batch path)
    account = None if row[n] is None else dict(zip(q.account_columns, row[n:], strict=True))
    if account is None:
        account_id = None
    since = cut - window_us(store, settings)
    seen = 0
    if store.cache is not None:
        # grouped by the account the lead names (whether or not it has a row), as the cache was warmed
        got = store.cache.lead(conn.connection, lead_id, lead["account_id"], cut, since, settings)
        act_t, act_k = got.act_t, got.act_k
        rows_read, seen = len(act_t), got.mark
        acc_t, acc_high, created = got.account_t, got.account_high_t, got.lead_created
    else:
        own = q.own_activity_times.all(conn, lead_id=lead_id, cut=cut)
        act_t, act_k = sorted_activities(_ints([r[0] for r in own]), type_codes([r[1] for r in own], settings))
        rows_read = len(own)
        acc_t = acc_high = created = None
        if account_id is not None:
            other = q.colleague_activity_times.all(conn, account_id=account_id, lead_id=lead_id, since=since, cut=cut)
            rows_read += len(other)
            acc_t = np.concatenate([act_t, _ints([r[0] for r in other])])
            acc_k = np.concatenate([act_k, type_codes([r[1] for r in other], settings)])
            order = np.argsort(acc_t, kind="stable")
            acc_t = acc_t[order]
            acc_high = acc_t[static(settings).high[acc_k[order]]]
            created = np.sort(_ints([r[0] for r in q.member_created.all(conn, account_id=account_id)]))
    stages = q.stage_times.all(conn, lead_id=lead_id, cut=cut)
    stg_t, stg_k = _ints([r[1] for r in stages]), stage_codes([r[0] for r in stages], settings)
    if len(stages) > 1:
        order = np.lexsort((stg_k, stg_t))
        stg_t, stg_k = stg_t[order], stg_k[order]
    fit_cat, fit_num = fit_values(lead, account, settings)
    acc_arrays = None
    if account_id is not None:
        assert acc_t is not None and acc_high is not None and created is not None
        opps = _account_opportunities(store, conn, lead_id, account_id, cut)
        o_created, o_closed = opportunity_arrays([o[0] for o in opps], [o[1] for o in opps])
        acc_arrays = AccountArrays(np.ascontiguousarray(created), o_created, o_closed, np.ascontiguousarray(acc_t),
                                   np.ascontiguousarray(acc_high))
    arrays = LeadArrays(lead_id=lead_id, created=int(lead["created_at"]), act_t=act_t, act_k=act_k,
                        stg_t=np.ascontiguousarray(stg_t), stg_k=np.ascontiguousarray(stg_k), fit_cat=fit_cat,
                        fit_num=fit_num, account=acc_arrays, rows_read=rows_read)
    return arrays, (rows_read if store.cache is None else seen)


def _account_opportunities(store: EventStore, conn: Connection, lead_id: str, account_id: str,
                           cut: int) -> list[tuple[int | None, int | None]]:
    """(created, closed) of the account's opportunities, attributed as the batch path does: to the
    account they name if that account exists, else to the account of their lead."""
    q = store.q
    out = []
    for o_acc, created, closed in q.opp_times_of_lead_or_account.all(conn, lead_id=lead_id,
                                                                            account_id=account_id, cut=cut):
        # without account it is the lead's, so ours (a colleague's is not read: the old frame read did
        # not either); naming another account: ours only if that account does not exist
        if o_acc is None or o_acc == account_id or q.account.first(conn, account_id=o_acc) is None:
            out.append((created, closed))
    return out
