"""The CRM schema, written once: one spec per table (ARCHITECTURE §1), plus the event store's own tables.

Everything else derives from these specs, so a new column is one line here (and one migration for
stores that already exist):

* the pandera validation of loaded history (:mod:`leadscore.history`): kinds, empties, keys,
  lengths, charsets, ranges, vocabularies, references between tables, time order;
* the SQLAlchemy tables of the event store (:mod:`leadscore.serving.store_tables`);
* the field constraints of the API's request models (:mod:`leadscore.serving.schemas`).

Kinds drive parsing and storage (``id``/``str`` → string, ``ts`` → UTC timestamp, ``float``/``int``
→ number, ``bool``, ``json`` → a JSON object as text, ``serial`` → the store's own row number).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from functools import cache, cached_property
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import pandas as pd

Kind = Literal["id", "str", "ts", "float", "int", "bool", "json", "serial"]

#: longest id the store keys on (``activity_id`` allows more: some sources build it from several parts)
ID_LENGTH = 128
#: The one id rule, for every id of every table and every path that takes one (history files, the
#: API's bodies, the Segment and HubSpot wire formats, ``GET /leads/{id}``): printable Unicode text
#: of at most ``ID_LENGTH`` characters, without
#:
#: * control characters: a stray newline in an export makes a key that never matches anything again;
#: * ``/``: an id is a URL path segment (``GET /leads/{id}``), and a ``/`` (even sent as ``%2F``,
#:   which servers decode) would make an id that is stored but can never be read back;
#: * lone UTF-16 surrogates (``"\ud800"`` is valid JSON): no UTF-8 encoding exists for them, so no
#:   database, file or log can hold them.
ID_PATTERN = r"^[^\x00-\x1f\x7f/]+$"
#: longest free text the API accepts per field; history files are not cut (CRMs hold long titles)
TEXT_LIMIT = 1000
#: who set a stage change
SET_BY = ("rule", "model", "sales", "import")
#: who acted in an activity: the lead itself (interest), or a rep touching the lead (never interest)
ACTORS = ("lead", "sales")
#: a reason code of a stage change: ``word`` or ``group:word`` (the catalogue is ``configs/reasons.yaml``)
REASON_PATTERN = r"^[a-z0-9_]+(:[a-z0-9_]+)?$"
#: marker for "the configured lifecycle stages" (``Settings.stages.all``): the vocabulary is config
STAGES = "stages"


@dataclass(frozen=True)
class Column:
    """One column and every constraint any consumer checks."""

    name: str
    kind: Kind
    nullable: bool = True
    max_length: int | None = None
    #: a regular expression the (stripped) value must match
    pattern: str | None = None
    #: lower bound of a number
    ge: float | None = None
    #: the allowed values, or :data:`STAGES` for the configured stages
    choices: tuple[str, ...] | str | None = None
    #: the table whose key this column holds (rows pointing at an unknown parent are rejected)
    references: str | None = None
    #: filled in when a history file lacks the column; the store's insert default too
    default: Any = None
    #: kept by the event store only, not part of the CRM contract (history frames do not carry it)
    store_only: bool = False
    doc: str = ""


def _id(name: str, nullable: bool = False, references: str | None = None, length: int = ID_LENGTH,
        doc: str = "") -> Column:
    return Column(name, "id", nullable=nullable, max_length=length, pattern=ID_PATTERN, references=references,
                  doc=doc)


def _text(name: str, doc: str = "") -> Column:
    return Column(name, "str", doc=doc)


def _ts(name: str, nullable: bool = False, doc: str = "", store_only: bool = False) -> Column:
    return Column(name, "ts", nullable=nullable, doc=doc, store_only=store_only)


@dataclass(frozen=True)
class TableSpec:
    name: str
    key: tuple[str, ...]
    fields: tuple[Column, ...]
    #: (name, columns) of the store's secondary indexes
    indexes: tuple[tuple[str, tuple[str, ...]], ...] = ()
    #: (earlier, later) timestamp pairs: ``later`` is empty or not before ``earlier``
    ordered: tuple[tuple[str, str], ...] = ()
    doc: str = ""

    @cached_property
    def columns(self) -> dict[str, Kind]:
        """The CRM contract: column → kind, in order (what history frames carry)."""
        return {c.name: c.kind for c in self.fields if not c.store_only}

    @cached_property
    def by_name(self) -> dict[str, Column]:
        return {c.name: c for c in self.fields}

    def column(self, name: str) -> Column:
        return self.by_name[name]

    @property
    def required(self) -> tuple[str, ...]:
        """Columns a history file must have (the others are left empty or get their default)."""
        return tuple(c.name for c in self.fields if not c.store_only and not c.nullable and c.default is None)

    @property
    def nullable(self) -> tuple[str, ...]:
        """Columns that may be empty in a valid row (the rest, when present, must be filled)."""
        return tuple(c.name for c in self.fields if not c.store_only and c.nullable)

    @property
    def timestamp_columns(self) -> list[str]:
        return [c for c, k in self.columns.items() if k == "ts"]


ACCOUNTS = TableSpec(
    name="accounts",
    key=("account_id",),
    fields=(
        _id("account_id"),
        _text("name"),
        _text("domain"),
        _text("industry"),
        Column("employees", "int", ge=0),
        Column("annual_revenue", "float", ge=0),
        _text("country"),
        _ts("created_at"),
    ),
)

LEADS = TableSpec(
    name="leads",
    key=("lead_id",),
    fields=(
        _id("lead_id"),
        _id("account_id", nullable=True, references="accounts"),
        _text("email_domain"),
        _text("job_title"),
        _text("seniority"),
        _text("department"),
        _text("country"),
        _text("source"),
        _ts("created_at"),
        Column("owner", "str", max_length=ID_LENGTH,
               doc="The rep or team that owns the lead (the CRM's owner); empty while unassigned."),
        # True when created_at was sent by the CRM; False when the store inferred it from the first
        # event seen, in which case an earlier (late-arriving) event moves it back.
        Column("created_at_explicit", "bool", nullable=False, default=False, store_only=True),
    ),
    # Covering: an account's leads with their creation times come from the index alone.
    indexes=(("ix_leads_account_id", ("account_id",)),
             ("ix_leads_account_lead_created", ("account_id", "lead_id", "created_at"))),
)

ACTIVITIES = TableSpec(
    name="activities",
    key=("activity_id",),
    fields=(
        _id("activity_id", length=256, doc="Idempotency key: the same activity sent twice counts once."),
        _id("lead_id", references="leads"),
        _ts("occurred_at"),
        Column("type", "str", nullable=False, max_length=64, doc="An activity type of the catalogue."),
        Column("properties", "json"),
        Column("actor", "str", nullable=False, max_length=16, choices=ACTORS, default="lead",
               doc="Who acted: the lead, or sales (a rep's call, email or meeting: never the lead's interest)."),
        _ts("received_at", store_only=True),
    ),
    indexes=(("ix_activities_lead_time", ("lead_id", "occurred_at")),),
)

STAGE_CHANGES = TableSpec(
    name="stage_changes",
    key=("lead_id", "changed_at", "stage"),
    fields=(
        _id("lead_id", references="leads"),
        Column("stage", "str", nullable=False, max_length=32, choices=STAGES),
        _ts("changed_at"),
        Column("set_by", "str", nullable=False, max_length=16, choices=SET_BY, default="import"),
        Column("reason", "str", max_length=64, pattern=REASON_PATTERN,
               doc="Why sales set it: a code of the reason catalogue (returned_not_ready, disqualified:<code>)."),
    ),
)

OPPORTUNITIES = TableSpec(
    name="opportunities",
    key=("opportunity_id",),
    fields=(
        _id("opportunity_id"),
        _id("lead_id", references="leads"),
        _id("account_id", nullable=True, references="accounts"),
        _ts("created_at"),
        _text("stage"),
        Column("amount", "float", ge=0),
        _ts("closed_at", nullable=True),
        Column("is_won", "bool"),
    ),
    indexes=(("ix_opportunities_lead_id", ("lead_id",)), ("ix_opportunities_account_id", ("account_id",))),
    ordered=(("created_at", "closed_at"),),
)

#: The service's audit trail of every score it answered with (never the CRM's stage_changes).
SCORES = TableSpec(
    name="scores",
    key=("id",),
    fields=(
        Column("id", "serial", nullable=False, store_only=True),
        _id("lead_id"),
        _ts("scored_at", doc="The moment scored (the activity's time)."),
        _ts("computed_at", doc="When the service computed the score."),
        Column("p_sql", "float", nullable=False, ge=0),
        Column("p_opportunity", "float", nullable=False, ge=0),
        Column("stage", "str", nullable=False, max_length=32, choices=STAGES),
        Column("previous_stage", "str", max_length=32, choices=STAGES),
        _ts("stage_since", doc="When the lead entered the stage."),
        Column("model_version", "str", nullable=False, max_length=64),
        Column("reasons", "json", nullable=False),
        Column("band", "str", max_length=2, doc="Fit/engagement band, A-C × 1-3 (e.g. 'B2')."),
    ),
    indexes=(("ix_scores_lead_time", ("lead_id", "scored_at", "id")),),
)

TABLES: dict[str, TableSpec] = {
    t.name: t for t in (ACCOUNTS, LEADS, ACTIVITIES, STAGE_CHANGES, OPPORTUNITIES)
}
#: the event store's own tables, beside the CRM ones
SERVICE_TABLES: dict[str, TableSpec] = {SCORES.name: SCORES}
#: tables without which nothing can be scored
ESSENTIAL_TABLES = ("leads", "activities")


@cache
def text_dtype() -> pd.StringDtype:
    """The dtype of every text column of a history frame: pandas 3's ``str`` (missing is NaN), on any pandas.

    Spelled out because ``astype("str")`` means that dtype on pandas 3 only: on pandas 2 it is numpy's
    ``str``, which turns a missing value into the text ``"None"`` or ``"nan"``, so an empty optional
    ``account_id`` became an unknown account, an empty ``reason`` a malformed reason code and a blank
    number an unparseable one.
    """
    import numpy as np
    import pandas as pd

    try:
        return pd.StringDtype(na_value=np.nan)  # pandas >= 2.3 (what pandas 3 calls "str")
    except TypeError:  # pandas 2.2: the same type under its provisional name
        return pd.StringDtype("pyarrow_numpy")


#: Arrow arrays known to hold distinct values, by id (weakly: an entry leaves with its array)
_DISTINCT: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()


def mark_distinct(values: Any) -> None:
    """Remember that an Arrow-backed column holds distinct values, so nobody proves it again.

    :func:`leadscore.history.load_history` marks each table's key after validation has rejected every
    duplicate; the feature engine, which must de-duplicate activities by id, then skips hashing ten
    million ids. Sound because Arrow arrays are immutable: pandas replaces a column's Arrow array when
    the column is written to, and a new array is not marked. Other columns are ignored.
    """
    arr = getattr(values, "_pa_array", None)
    if arr is not None:
        _DISTINCT[id(arr)] = arr


def known_distinct(values: Any) -> bool:
    """True when ``values`` is an Arrow-backed column marked by :func:`mark_distinct`."""
    arr = getattr(values, "_pa_array", None)
    return arr is not None and _DISTINCT.get(id(arr)) is arr
