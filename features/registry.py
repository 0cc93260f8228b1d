"""The feature registry: each feature family is declared once, everything positional is derived from it.

A :class:`Family` (one module under :mod:`features.families`) declares its columns (name, dtype,
group, description, plain-language reason template, concept), the kernel inputs it reads, the
parameters it takes from the configuration, and — unless it is computed outside the kernel, like the
fit attributes — a numba function with the one signature every family shares::

    kernel(row, off, p, x, lead, t, lo, hi)

``row`` is the moment's output row, ``off`` the family's first slot in it, ``p`` its parameters (a
tuple from :attr:`Family.params`), ``x`` the :class:`KernelInputs`, and ``lo:hi`` the lead's
activities dated ``<= t``. A family whose per-moment work repeats a costly per-activity term (the
decay factors) may also declare ``derive(out, p, x, lo, hi)``: per-activity values computed once per
kernel call and lead, handed to its kernel as the last item of ``p`` (see :attr:`Family.derive`).
From the enabled families, :func:`resolve` derives the feature schema,
every slot offset and the kernel driver (:mod:`features.driver`), so adding a family never edits an
offset, an unpack or a signature anywhere else.

Families are discovered from the package (no list to edit) and ordered by :attr:`Family.order`; the
default families' order reproduces the column order trained models were fed.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from pydantic import BaseModel, ConfigDict, ValidationError

from leadscore.errors import ConfigError
from leadscore.features.schema import FeatureSpec

if TYPE_CHECKING:
    import numpy as np

    from leadscore.config import Settings


class KernelInputs(NamedTuple):
    """The per-lead and per-account arrays (CSR: ``ptr[i]:ptr[i+1]``) every family may read.

    Built once per history by :func:`features.engine.prepare`; times are int64 µs since the epoch.
    """

    act_ptr: np.ndarray  # per lead: its activities, sorted by (time, type), de-duplicated
    act_t: np.ndarray
    act_k: np.ndarray  # activity type code (catalogue position)
    act_day: np.ndarray  # UTC day number of the activity
    stg_ptr: np.ndarray  # per lead: its stage changes, sorted by time
    stg_t: np.ndarray
    stg_k: np.ndarray  # stage code (position in stages.all)
    lead_created: np.ndarray
    lead_acc: np.ndarray  # account code of each lead, -1 without account
    accl_ptr: np.ndarray  # per account: creation times of its leads, sorted
    accl_t: np.ndarray
    acco_ptr: np.ndarray  # per account: its opportunities
    acco_created: np.ndarray
    acco_closed: np.ndarray  # FAR when still open
    acca_ptr: np.ndarray  # per account: times of all its leads' activities, sorted
    acca_t: np.ndarray
    acch_ptr: np.ndarray  # per account: times of its leads' high-intent activities, sorted
    acch_t: np.ndarray


INPUTS = frozenset(KernelInputs._fields)


class NoParams(BaseModel):
    """A family without parameters of its own (it may still read the shared ``features`` knobs)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Family:
    """One feature family: what it computes, from what, with which parameters (module docstring).

    ``columns(settings, params)`` gives its schema columns in output order; ``slots`` (default: one per
    column) gives the kernel slots it writes when they differ from its columns (the rule family
    writes the rule's activity points, which is not a model input). ``params(settings, params)``
    builds the tuple its kernel receives. ``Params`` is the pydantic model of its own keys under
    ``features.families.<name>``.
    """

    name: str
    order: int
    doc: str
    columns: Callable[[Settings, Any], list[FeatureSpec]]
    inputs: frozenset[str] = frozenset()
    kernel: Any = None
    params: Callable[[Settings, Any], tuple[Any, ...]] = lambda s, p: ()
    Params: type[BaseModel] = NoParams
    enabled_by_default: bool = True
    slots: Callable[[Settings, Any], list[str]] | None = None
    #: for ``str`` columns written by the kernel as codes: column name → categories (code = position)
    categories: Callable[[Settings], dict[str, tuple[str, ...]]] = lambda s: {}
    #: optional numba function ``derive(out, p, x, lo, hi)`` filling ``out[:, 0:hi - lo]`` (float64,
    #: lead-local: column ``j - lo`` for activity j) for one lead's activities ``lo:hi``; the driver runs
    #: it for each lead with a moment, over the rows up to its latest moment, batch and online alike,
    #: and appends ``out`` to the kernel's ``p`` (the kernel reads column ``j - lo`` too). A value of
    #: row j may depend on rows ``<= j`` of the lead only: then a moment reads nothing computed from
    #: rows after it, and its values stay independent of which other rows and moments are present.
    derive: Any = None
    derived_rows: Callable[[Settings, Any], int] = lambda s, p: 0

    def __post_init__(self) -> None:
        unknown = self.inputs - INPUTS
        if unknown:
            raise ConfigError(f"feature family {self.name!r} reads unknown input(s) {sorted(unknown)}")
        if self.derive is not None and self.kernel is None:
            raise ConfigError(f"feature family {self.name!r} derives inputs for a kernel it does not have")


@dataclass(frozen=True)
class Resolved:
    """A family enabled under some settings, with its parameters, columns and kernel slots."""

    family: Family
    params: Any
    columns: list[FeatureSpec]
    slots: list[str]
    offset: int  # first kernel slot (meaningless for families without a kernel)
    kernel_params: tuple[Any, ...]
    derived_rows: int = 0  # rows of the family's derived per-activity array (0: no derive)


@dataclass(frozen=True)
class Registry:
    """The enabled families of one settings object and everything derived from them."""

    families: list[Resolved]
    width: int  # kernel row width
    slot: dict[str, int]  # kernel slot name → position in the row
    schema: list[FeatureSpec] = field(default_factory=list)

    def family(self, name: str) -> Resolved | None:
        return next((r for r in self.families if r.family.name == name), None)


_ALL: list[Family] | None = None


def all_families() -> list[Family]:
    """Every family module under :mod:`features.families` (its ``FAMILY``), in ``order``."""
    global _ALL
    if _ALL is None:
        from leadscore.features import families as pkg

        found = []
        for info in pkgutil.iter_modules(pkg.__path__):
            module = importlib.import_module(f"{pkg.__name__}.{info.name}")
            fam = getattr(module, "FAMILY", None)
            if isinstance(fam, Family):
                found.append(fam)
        found.sort(key=lambda f: (f.order, f.name))
        names = [f.name for f in found]
        if len(set(names)) != len(names):
            raise ConfigError(f"two feature families share a name: {names}")
        _ALL = found
    return _ALL


def registry(settings: Settings) -> Registry:
    """The enabled families for ``settings``, resolved once and kept with that settings object."""
    return settings.derived("features.registry", resolve)


def resolve(settings: Settings) -> Registry:
    """Check the ``features.families`` section, then lay out columns and kernel slots family by family."""
    families = all_families()
    known = {f.name: f for f in families}
    switches = settings.features.families
    unknown = sorted(set(switches) - set(known))
    if unknown:
        raise ConfigError(f"features.families: unknown family {unknown} (known: {sorted(known)})")
    out: list[Resolved] = []
    slot: dict[str, int] = {}
    pos = 0
    for fam in families:
        switch = switches.get(fam.name)
        enabled = fam.enabled_by_default if switch is None or switch.enabled is None else switch.enabled
        if not enabled:
            continue
        extra = dict(switch.model_extra or {}) if switch is not None else {}
        try:
            params = fam.Params.model_validate(extra)
        except ValidationError as exc:
            raise ConfigError(f"features.families.{fam.name}: {exc}") from exc
        cols = fam.columns(settings, params)
        slots = [] if fam.kernel is None else (fam.slots(settings, params) if fam.slots else [c.name for c in cols])
        for i, name in enumerate(slots):
            if name in slot:
                raise ConfigError(f"feature family {fam.name!r}: slot {name!r} is already written by another family")
            slot[name] = pos + i
        kp = fam.params(settings, params) if fam.kernel is not None else ()
        derived = fam.derived_rows(settings, params) if fam.derive is not None else 0
        out.append(Resolved(fam, params, cols, slots, pos, kp, derived))
        pos += len(slots)
    schema = [c for r in out for c in r.columns]
    names = [c.name for c in schema]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ConfigError(f"feature columns defined twice: {dup}")
    return Registry(out, pos, slot, schema)


def changed_switches(settings: Settings) -> dict[str, Any]:
    """The ``features.families`` entries that change anything, for the schema hash.

    A family that stays off shapes no column whatever its parameters say, and a switch that restates
    a family's default changes nothing: neither may change the hash of a default configuration.
    """
    out: dict[str, Any] = {}
    for fam in all_families():
        switch = settings.features.families.get(fam.name)
        if switch is None:
            continue
        enabled = fam.enabled_by_default if switch.enabled is None else switch.enabled
        entry: dict[str, Any] = dict(switch.model_extra or {}) if enabled else {}
        if enabled != fam.enabled_by_default:
            entry["enabled"] = enabled
        if entry:
            out[fam.name] = entry
    return out
