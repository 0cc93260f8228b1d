"""An in-process copy of the activities that scoring reads, kept equal to a SQLite event store.

Scoring a lead reads its own activities and, for the account roll-ups, the last 31 days of its
colleagues' activities: ~12k rows for a lead of a 550-person account, 25-40 ms of SQL and frame
building on every request. This cache keeps, per *group* (an account with all its leads, or a lead
without account), every activity of the group's leads as columns sorted by time, so a request only
slices arrays.

Why it stays equal to the database, whichever process wrote:

* Activities are insert-only: the service never updates or deletes one (a retry is ignored by id).
* SQLite gives a new row the rowid ``max(rowid) + 1``, and writers are serialised, so rowids are
  handed out in commit order (a rowid freed by a rollback is re-used before any later one commits).
  "Every row with rowid > mark" is therefore exactly what was committed since the cache last looked,
  by this process or any other. Every read first folds those rows in (:meth:`ActivityCache.sync`);
  the row at ``mark`` is read back with them, and if it is gone or has another id (``VACUUM``
  renumbered the rowids, the newest rows were deleted by hand) the whole cache is dropped and
  refilled on demand. Older rows deleted by hand without a ``VACUUM`` are not noticed: restart the
  service after editing the activities table by hand.
* Which leads belong to an account *can* change (a lead moved to another account), so the cache does
  not own that: the caller passes the member list it has just read from the database, the group
  loads the rows of members it has not seen (up to ``mark``), and rows of leads that left are kept
  but never returned.

Only SQLite has rowids with that guarantee; other databases read from SQL every time. The cache is
bounded by rows (least recently used groups are dropped) and guarded by one lock (requests run in a
thread pool).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

#: a sync that finds more new rows than this drops the cache instead of folding them one by one
_MAX_DELTA = 50_000
_IN_CHUNK = 500


@dataclass
class ActivityColumns:
    """Rows of the activities table (without properties), in no particular order."""

    activity_id: pa.Array | pa.ChunkedArray
    lead_id: pa.Array
    occurred_at: np.ndarray  # int64 µs
    type: pa.Array

    def __len__(self) -> int:
        return len(self.occurred_at)


def _grow(a: np.ndarray, need: int) -> np.ndarray:
    if need <= len(a):
        return a
    out = np.empty(max(need, 2 * len(a), 64), dtype=a.dtype)
    out[: len(a)] = a
    return out


class _Group:
    """Every activity of some leads: insertion-order columns plus a by-time order."""

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}  # lead id -> code
        self.lead_ids: list[str] = []
        self.active = np.zeros(0, dtype=bool)  # per code: still a member
        self.n = 0
        self.t = np.empty(0, dtype=np.int64)
        self.lead = np.empty(0, dtype=np.int32)
        self.typ = np.empty(0, dtype=np.int32)
        self.aid: list[str] = []
        self._aid_chunks: list[pa.Array] = []
        self._aid_done = 0
        self._order = np.empty(0, dtype=np.int64)  # capacity buffers of the two below
        self._t_sorted = np.empty(0, dtype=np.int64)
        self.order = self._order[:0]  # positions sorted by time (stable)
        self.t_sorted = self._t_sorted[:0]
        self._names: pa.Array | None = None
        self.by_lead: dict[int, list[int]] = {}  # code -> positions, in insertion order

    def add_rows(self, rows: Sequence[tuple[str, str, int, int]]) -> None:
        """Append rows ``(activity_id, lead_id, occurred_at, type code)`` of member leads."""
        if not rows:
            return
        k = len(rows)
        start, end = self.n, self.n + k
        self.t = _grow(self.t, end)
        self.lead = _grow(self.lead, end)
        self.typ = _grow(self.typ, end)
        codes, by_lead = self.codes, self.by_lead
        for i, (aid, lead_id, t, typ) in enumerate(rows, start):
            code = codes[lead_id]
            self.t[i] = t
            self.lead[i] = code
            self.typ[i] = typ
            self.aid.append(aid)
            by_lead.setdefault(code, []).append(i)
        self.n = end
        new_t = self.t[start:end]
        self._order = _grow(self._order, end)
        self._t_sorted = _grow(self._t_sorted, end)
        if start and (new_t[0] >= self._t_sorted[start - 1] and bool(np.all(new_t[1:] >= new_t[:-1]))):
            self._order[start:end] = np.arange(start, end, dtype=np.int64)  # the usual case: appended in time order
            self._t_sorted[start:end] = new_t
        else:  # first fill, or a late activity: sort again (stable: ties keep insertion order)
            self._order[:end] = np.argsort(self.t[:end], kind="stable")
            self._t_sorted[:end] = self.t[self._order[:end]]
        self.order, self.t_sorted = self._order[:end], self._t_sorted[:end]

    def set_members(self, lead_ids: Sequence[str]) -> list[str]:
        """Make exactly ``lead_ids`` the members; returns the ones never seen before (rows to load)."""
        new = [lid for lid in lead_ids if lid not in self.codes]
        for lid in new:
            self.codes[lid] = len(self.lead_ids)
            self.lead_ids.append(lid)
        if new:
            self._names = None
        active = np.zeros(len(self.lead_ids), dtype=bool)
        active[[self.codes[lid] for lid in lead_ids]] = True
        self.active = active
        return new

    def _aid_array(self) -> pa.ChunkedArray:
        if self._aid_done < len(self.aid):
            self._aid_chunks.append(pa.array(self.aid[self._aid_done :], type=pa.large_string()))
            self._aid_done = len(self.aid)
            if len(self._aid_chunks) > 16:
                self._aid_chunks = [pa.concat_arrays(self._aid_chunks)]
        return pa.chunked_array(self._aid_chunks, type=pa.large_string())

    def slice(self, lead_id: str, cut: int, since: int | None, types: pa.Array) -> ActivityColumns:
        """The lead's activities up to ``cut`` and, when ``since`` is given, the other members'
        activities in ``(since, cut]``; in time order (what the feature engine sorts fastest)."""
        own = np.array(self.by_lead.get(self.codes[lead_id], ()), dtype=np.int64)
        own_t = self.t[own]
        if len(own) > 1 and bool(np.any(own_t[1:] < own_t[:-1])):
            own = own[np.argsort(own_t, kind="stable")]
            own_t = self.t[own]
        hi = int(np.searchsorted(self.t_sorted, cut, side="right"))
        lo = hi if since is None else min(int(np.searchsorted(self.t_sorted, since, side="right")), hi)
        head = own[own_t <= (cut if since is None else since)]  # the lead's own rows before the window
        window = self.order[lo:hi]  # empty without ``since``
        window = window[self.active[self.lead[window]]]  # the lead and its current colleagues
        pos = np.concatenate([head, window])  # head times <= since < window times: still in time order
        if self._names is None:
            self._names = pa.array(self.lead_ids, type=pa.large_string())
        return ActivityColumns(
            activity_id=self._aid_array().take(pa.array(pos)),
            lead_id=self._names.take(pa.array(self.lead[pos])),
            occurred_at=self.t[pos],
            type=types.take(pa.array(self.typ[pos])),
        )


class ActivityCache:
    """See the module docstring. ``max_rows`` bounds the rows held over all groups."""

    def __init__(self, max_rows: int) -> None:
        self.max_rows = max_rows
        self.lock = threading.Lock()
        self.groups: OrderedDict[tuple[str, str], _Group] = OrderedDict()
        self.owners: dict[str, list[tuple[str, str]]] = {}
        self.mark: int | None = None
        self.mark_id: str | None = None
        self.type_codes: dict[str, int] = {}
        self.type_names: list[str] = []
        self._types = pa.array([], type=pa.large_string())
        self.rows = 0
        self.stats = {"hits": 0, "loads": 0, "resets": 0, "delta_rows": 0}

    # ------------------------------------------------------------------ bookkeeping
    def _type(self, name: str) -> int:
        code = self.type_codes.get(name)
        if code is None:
            code = self.type_codes[name] = len(self.type_names)
            self.type_names.append(name)
            self._types = pa.array(self.type_names, type=pa.large_string())
        return code

    def _reset(self, mark: int | None, mark_id: str | None) -> None:
        self.groups.clear()
        self.owners.clear()
        self.rows = 0
        self.mark, self.mark_id = mark, mark_id
        self.stats["resets"] += 1

    @staticmethod
    def _fetch(raw: Any, sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
        cur = raw.cursor()
        try:
            cur.execute(sql, tuple(args))
            return list(cur.fetchall())
        finally:
            cur.close()

    def sync(self, raw: Any) -> None:
        """Fold in every activity committed since the last look (by any process)."""
        if self.mark is None:
            top = self._fetch(raw, "SELECT rowid, activity_id FROM activities ORDER BY rowid DESC LIMIT 1", ())
            self._reset(*(top[0] if top else (0, None)))
            return
        rows = self._fetch(
            raw,
            "SELECT rowid, activity_id, lead_id, occurred_at, type FROM activities WHERE rowid >= ? "
            "ORDER BY rowid LIMIT ?",
            (self.mark, _MAX_DELTA + 2),
        )
        if self.mark_id is not None:
            if not rows or rows[0][0] != self.mark or rows[0][1] != self.mark_id:
                self.mark = None  # renumbered or deleted: start again from what is there now
                return self.sync(raw)
            rows = rows[1:]
        if len(rows) > _MAX_DELTA:
            self.mark = None
            return self.sync(raw)
        if not rows:
            return
        self.stats["delta_rows"] += len(rows)
        per_group: dict[tuple[str, str], list[tuple[str, str, int, int]]] = {}
        owners = self.owners
        for _, aid, lead_id, t, typ in rows:
            keys = owners.get(lead_id)
            if keys:
                item = (aid, lead_id, int(t), self._type(typ))
                for key in keys:
                    per_group.setdefault(key, []).append(item)
        for key, items in per_group.items():
            self.groups[key].add_rows(items)
            self.rows += len(items)
        self.mark, self.mark_id = int(rows[-1][0]), str(rows[-1][1])

    def _load(self, raw: Any, lead_ids: list[str]) -> list[tuple[str, str, int, int]]:
        """Rows of these leads committed up to ``mark`` (later ones come with the next sync)."""
        out: list[tuple[str, str, int, int]] = []
        for start in range(0, len(lead_ids), _IN_CHUNK):
            chunk = lead_ids[start : start + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self._fetch(
                raw,
                f"SELECT activity_id, lead_id, occurred_at, type FROM activities "  # only placeholders are formatted in
                f"WHERE lead_id IN ({marks}) AND rowid <= ?",
                (*chunk, self.mark),
            )
            codes, code = self.type_codes, self._type
            out.extend((aid, lid, int(t), codes[typ] if typ in codes else code(typ)) for aid, lid, t, typ in rows)
        return out

    def _evict(self, keep: tuple[str, str]) -> None:
        while self.rows > self.max_rows and len(self.groups) > 1:
            key, group = next(iter(self.groups.items()))
            if key == keep:
                self.groups.move_to_end(key)
                continue
            del self.groups[key]
            self.rows -= group.n
            for lid in group.lead_ids:
                keys = self.owners.get(lid)
                if keys is not None and key in keys:
                    keys.remove(key)
                    if not keys:
                        del self.owners[lid]

    # ------------------------------------------------------------------ warming up
    def warm(self, raw: Any, budget: int) -> int:
        """Fill the groups of the most recently active leads, up to about ``budget`` rows (at start,
        so that the first request of each account does not pay for reading its history). Returns
        the rows loaded. Membership comes from the leads table as it is now; each request checks it
        again."""
        recent = self._fetch(raw, "SELECT lead_id FROM activities ORDER BY rowid DESC LIMIT ?", (budget,))
        order = list(dict.fromkeys(lid for (lid,) in recent))  # newest first, each lead once
        loaded = 0
        with self.lock:
            self.sync(raw)
            done: set[str] = set()
            for start in range(0, len(order), _IN_CHUNK):
                chunk = [lid for lid in order[start : start + _IN_CHUNK] if lid not in done]
                if not chunk:
                    continue
                marks = ",".join("?" * len(chunk))
                accounts = self._fetch(raw, f"SELECT lead_id, account_id FROM leads WHERE lead_id IN ({marks})", chunk)
                for lead_id, account_id in accounts:
                    if lead_id in done:
                        continue
                    if account_id is None:
                        key, members = ("lead", lead_id), [lead_id]
                    else:
                        key = ("account", account_id)
                        members = [m for (m,) in self._fetch(raw, "SELECT lead_id FROM leads WHERE account_id = ?",
                                                             (account_id,))]
                    done.update(members)
                    if key in self.groups:
                        continue
                    group = self.groups[key] = _Group()
                    group.set_members(members)
                    for lid in members:
                        self.owners.setdefault(lid, []).append(key)
                    rows = self._load(raw, members)
                    group.add_rows(rows)
                    self.rows += len(rows)
                    loaded += len(rows)
                    if self.rows >= budget:
                        return loaded
        return loaded

    # ------------------------------------------------------------------ the read
    def activities(self, raw: Any, lead_id: str, account_id: str | None, colleagues: Sequence[str], cut: int,
                   since: int | None) -> ActivityColumns:
        """What ``EventStore.load_lead_history`` reads from ``activities``: the lead's rows up to ``cut``
        and, if ``since`` is given, the colleagues' rows in ``(since, cut]``.

        ``colleagues`` are the account's other leads as just read from the database (the truth).
        ``raw`` is a DBAPI connection of the store.
        """
        key = ("account", account_id) if account_id is not None else ("lead", lead_id)
        members = [lead_id, *colleagues]
        with self.lock:
            self.sync(raw)
            group = self.groups.get(key)
            if group is None:
                group = self.groups[key] = _Group()
            else:
                self.groups.move_to_end(key)
            new = group.set_members(members)
            if new:
                self.stats["loads"] += 1
                for lid in new:
                    self.owners.setdefault(lid, []).append(key)
                rows = self._load(raw, new)
                group.add_rows(rows)
                self.rows += len(rows)
                self._evict(key)
            else:
                self.stats["hits"] += 1
            return group.slice(lead_id, cut, since, self._types)
