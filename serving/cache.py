"""An in-process copy of the activities that scoring reads, kept equal to a SQLite event store.

Scoring a lead reads its own activities and, for the account roll-ups, the window of its colleagues'
activities (``features.account_window_days``): ~12k rows for a lead of a 550-person account, tens of
ms of SQL on every request. This cache keeps, per *group* (an account with all its leads, or a lead
without account), every activity of the group's leads as arrays sorted by time, and hands the feature
kernel the arrays it reads (:class:`CachedLead`).

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
* Which leads belong to an account *can* change (a lead moved to another account, a lead created), and
  an update leaves no trace a reader could follow, so every read compares the account's membership
  version (:mod:`leadscore.serving.members`, kept by triggers on the leads table) with the one it read
  the members at: one indexed row, so a 4,000-lead account costs what a small one costs. When it moved,
  the members are read, the group loads the rows of members it has not seen (up to ``mark``), and rows
  of leads that left are kept but never counted.
* The account roll-ups count the account's activities in a window by binary search: the group keeps
  all its rows' times sorted, and those of the high-intent ones, extended as rows arrive in time order
  (a late row re-sorts), so a lead of a big account reads no more than a lead of a small one.

Only SQLite has rowids with that guarantee; other databases read from SQL every time. The cache is
bounded by rows (least recently used groups are dropped) and guarded by one lock (requests run in a
thread pool).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from leadscore.features.online import sorted_activities, type_codes
from leadscore.serving.members import fetch, members, members_version

if TYPE_CHECKING:
    from leadscore.config import Settings

#: a sync that finds more new rows than this drops the cache instead of folding them one by one
_MAX_DELTA = 50_000
_IN_CHUNK = 500


@dataclass(frozen=True)
class CachedLead:
    """What :meth:`ActivityCache.lead` returns, in the kernel's layout (catalogue type codes).

    ``account_t`` / ``account_high_t``: sorted times of the activities of the account's current leads
    (all of them, or those in ``(since, cut]`` when a lead has left the account), this lead's
    included; ``lead_created``: the sorted creation times of the account's leads. All three are None
    for a lead without account.
    """

    act_t: np.ndarray
    act_k: np.ndarray
    account_t: np.ndarray | None
    account_high_t: np.ndarray | None
    lead_created: np.ndarray | None
    #: the store's activity rowid mark these were read at: every activity committed up to it is counted,
    #: none after (what a score's check reads the rows after: :func:`leadscore.serving.rescore.still_current`)
    mark: int = 0


def _grow(a: np.ndarray, need: int) -> np.ndarray:
    if need <= len(a):
        return a
    out = np.empty(max(need, 2 * len(a), 64), dtype=a.dtype)
    out[: len(a)] = a
    return out


class _Group:
    """Every activity of some leads: insertion-order columns plus a by-time order, and the sorted
    times of the high-intent ones, extended as rows arrive (the account roll-ups' binary searches)."""

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}  # lead id -> code
        self.lead_ids: list[str] = []
        self.active = np.zeros(0, dtype=bool)  # per code: still a member
        self.all_active = True
        self.n = 0
        self.t = np.empty(0, dtype=np.int64)
        self.lead = np.empty(0, dtype=np.int32)
        self.typ = np.empty(0, dtype=np.int32)  # the cache's type codes
        self._order = np.empty(0, dtype=np.int64)  # capacity buffers of the two below
        self._t_sorted = np.empty(0, dtype=np.int64)
        self.order = self._order[:0]  # positions sorted by time (stable)
        self.t_sorted = self._t_sorted[:0]
        self.sort_version = 0  # bumped when a late row made the by-time order be rebuilt
        self.by_lead: dict[int, list[int]] = {}  # code -> positions, in insertion order
        self.members_version: int | None = None  # the account's membership version they were read at
        self.created = np.empty(0, dtype=np.int64)  # their creation times, sorted
        # high-intent times: [mask bytes, sort_version, rows covered, buffer, length]
        self._high: list[Any] | None = None

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
        for i, (_, lead_id, t, typ) in enumerate(rows, start):
            code = codes[lead_id]
            self.t[i] = t
            self.lead[i] = code
            self.typ[i] = typ
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
            self.sort_version += 1
        self.order, self.t_sorted = self._order[:end], self._t_sorted[:end]

    def set_members(self, lead_ids: Sequence[str]) -> list[str]:
        """Make exactly ``lead_ids`` the members; returns the ones never seen before (rows to load)."""
        new = [lid for lid in lead_ids if lid not in self.codes]
        for lid in new:
            self.codes[lid] = len(self.lead_ids)
            self.lead_ids.append(lid)
        active = np.zeros(len(self.lead_ids), dtype=bool)
        active[[self.codes[lid] for lid in lead_ids]] = True
        self.active = active
        self.all_active = bool(active.all())
        return new

    def own(self, lead_id: str, cut: int) -> np.ndarray:
        """Positions of the lead's rows dated up to ``cut``."""
        own = np.array(self.by_lead.get(self.codes[lead_id], ()), dtype=np.int64)
        return own[self.t[own] <= cut]

    def high_sorted(self, high: np.ndarray) -> np.ndarray:
        """Sorted times of the rows whose type is flagged in ``high`` (per cache type code), extended
        with the rows appended in time order since the last call, rebuilt after a late row."""
        key = high.tobytes()
        h = self._high
        if h is None or h[0] != key or h[1] != self.sort_version:
            buf = self.t_sorted[high[self.typ[self.order]]].copy()
            h = self._high = [key, self.sort_version, self.n, buf, len(buf)]
        elif h[2] < self.n:
            pos = self.order[h[2]:self.n]  # appended in time order: they extend the sorted times
            new = self.t[pos][high[self.typ[pos]]]
            buf = _grow(h[3], h[4] + len(new))
            buf[h[4]:h[4] + len(new)] = new
            h[2], h[3], h[4] = self.n, buf, h[4] + len(new)
        return h[3][: h[4]]  # type: ignore[no-any-return]

    def window(self, since: int, cut: int, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sorted times of the current members' rows in ``(since, cut]``, and of the high-intent ones
        (when a lead left the account: its rows stay here but must not count)."""
        lo = int(np.searchsorted(self.t_sorted, since, side="right"))
        hi = int(np.searchsorted(self.t_sorted, cut, side="right"))
        pos = self.order[lo:hi]
        pos = pos[self.active[self.lead[pos]]]
        t = self.t[pos]
        return t, t[high[self.typ[pos]]]


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
        self._catalogue: tuple[Any, int, np.ndarray] | None = None  # (settings, types mapped, codes)
        self.rows = 0
        self.stats = {"hits": 0, "loads": 0, "resets": 0, "delta_rows": 0}

    # ------------------------------------------------------------------ bookkeeping
    def _type(self, name: str) -> int:
        code = self.type_codes.get(name)
        if code is None:
            code = self.type_codes[name] = len(self.type_names)
            self.type_names.append(name)
        return code

    def _reset(self, mark: int | None, mark_id: str | None) -> None:
        self.groups.clear()
        self.owners.clear()
        self.rows = 0
        self.mark, self.mark_id = mark, mark_id
        self.stats["resets"] += 1

    _fetch = staticmethod(fetch)

    def sync(self, raw: Any) -> None:
        """Fold in every activity committed since the last look (by any process)."""
        if self.mark is None:
            top = self._fetch(raw, "SELECT rowid, activity_id FROM activities ORDER BY rowid DESC LIMIT 1", ())
            self._reset(*(top[0] if top else (0, None)))
            return
        rows = self._fetch(
            raw,
            "SELECT rowid, activity_id, lead_id, occurred_at, type, actor FROM activities WHERE rowid >= ? "
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
        for _, aid, lead_id, t, typ, actor in rows:
            keys = owners.get(lead_id)
            if keys and actor != "sales":  # sales touches are never interest (features/actors.py)
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
                f"WHERE lead_id IN ({marks}) AND rowid <= ? AND actor != 'sales'",
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
    def _catalogue_codes(self, settings: Settings) -> np.ndarray:
        """Catalogue position of each of the cache's type codes (``features.online.type_codes``)."""
        memo = self._catalogue
        if memo is None or memo[0] is not settings or memo[1] != len(self.type_names):
            memo = self._catalogue = (settings, len(self.type_names), type_codes(self.type_names, settings))
        return memo[2]

    def _members(self, raw: Any, key: tuple[str, str], group: _Group, account_id: str) -> None:
        """Bring the group's members (and their creation times) up to the leads table: the membership
        version is read and compared; the members only when it moved."""
        version = members_version(raw, account_id)
        if version is not None and version == group.members_version:
            return
        rows = members(raw, account_id)
        self._add_members(raw, key, group, group.set_members([lid for lid, _ in rows]))
        group.created = np.sort(np.array([t for _, t in rows if t is not None], dtype=np.int64))
        group.members_version = version

    def _add_members(self, raw: Any, key: tuple[str, str], group: _Group, new: list[str]) -> None:
        """Load the rows of leads new to the group (up to ``mark``)."""
        if not new:
            return
        self.stats["loads"] += 1
        for lid in new:
            self.owners.setdefault(lid, []).append(key)
        rows = self._load(raw, new)
        group.add_rows(rows)
        self.rows += len(rows)

    # ------------------------------------------------------------------ the read
    def lead(self, raw: Any, lead_id: str, account_id: str | None, cut: int, since: int,
             settings: Settings) -> CachedLead:
        """The lead's activities up to ``cut`` and, with an account, the account roll-ups' arrays
        (``since``: start of the window used when a lead has left the account, see :class:`CachedLead`).

        ``account_id`` is the lead's as just read from the database; the account's members are
        checked against the leads table (the truth) on every call, by version. ``raw`` is a DBAPI connection
        of the store.
        """
        key = ("account", account_id) if account_id is not None else ("lead", lead_id)
        with self.lock:
            self.sync(raw)
            loads = self.stats["loads"]
            group = self.groups.get(key)
            if group is None:
                group = self.groups[key] = _Group()
            else:
                self.groups.move_to_end(key)
            if account_id is not None:
                self._members(raw, key, group, account_id)
            code = group.codes.get(lead_id)
            if code is None or not group.active[code]:
                # alone, or it joined the account between our two reads: count it, read members again next time
                members = [lead_id] if account_id is None else [*np.array(group.lead_ids, dtype=object)[
                    group.active[: len(group.lead_ids)]], lead_id]
                self._add_members(raw, key, group, group.set_members(members))
                group.members_version = None
            if self.stats["loads"] == loads:
                self.stats["hits"] += 1
            self._evict(key)
            codes = self._catalogue_codes(settings)
            own = group.own(lead_id, cut)
            act_t, act_k = sorted_activities(group.t[own], codes[group.typ[own]])
            mark = self.mark or 0
            if account_id is None:
                return CachedLead(act_t, act_k, None, None, None, mark)
            from leadscore.features.engine import static

            high = static(settings).high[codes]
            if group.all_active:
                acc_t, acc_high = group.t_sorted, group.high_sorted(high)
            else:
                acc_t, acc_high = group.window(since, cut, high)
            return CachedLead(act_t, act_k, acc_t, acc_high, group.created, mark)
