"""The mapping of a flat lead table: what each column of a one-row-per-lead export is.

A mapping YAML (see ``configs/mappings/``) names the id, the label (and which values are positive),
the time (a timestamp column, or a sequential column / the row order when the table has no dates),
each column's role (``fit`` = who the lead is, ``interest`` = what the lead did, ``ignore``) and type,
the columns filled after the outcome (``leakage``), those let through the leakage guard on purpose
(``allow_leaky``), and the points rule the model is compared with. :mod:`training.flat` turns a table
and its mapping into features; this module only reads and validates the mapping.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from leadscore.errors import DataError

DatePart = Literal["weekday", "day", "hour"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ColumnSpec(_Strict):
    role: Literal["fit", "interest", "ignore"] = "fit"
    type: Literal["numeric", "categorical", "datetime"] = "categorical"
    description: str | None = None
    #: datetime only: which parts become features (no year/month: a time split never sees future months)
    parts: list[DatePart] = Field(default_factory=lambda: list[DatePart](["weekday"]))
    #: categorical only: rows with the same value in the previous N days (point in time; needs a time column)
    rolling_counts: list[int] = Field(default_factory=list)
    #: categorical only: days since the value first appeared and how many earlier rows had it
    history: bool = False


class TimeSpec(_Strict):
    column: str | None = None
    order_by: str | None = None
    descending: bool = False
    #: row-order time only: equal-size ordinal periods (stamped as months) for the monthly split
    periods: int = Field(default=12, ge=4)


class RulePoints(_Strict):
    column: str
    values: list[str] | None = None
    min: float | None = None
    max: float | None = None
    missing: bool | None = None
    points: float

    @model_validator(mode="after")
    def _one_condition(self) -> RulePoints:
        if self.values is None and self.min is None and self.max is None and self.missing is None:
            raise ValueError(f"rule on {self.column!r} needs values, min/max or missing")
        return self


class RuleSpec(_Strict):
    points: list[RulePoints] = Field(default_factory=list)
    mql_threshold: float = 0.0


class FlatMapping(_Strict):
    name: str
    id: str | None = None
    label: str
    positive: list[str] = Field(default_factory=lambda: ["1", "1.0", "true", "yes", "y", "won", "converted"])
    time: TimeSpec = Field(default_factory=TimeSpec)
    horizon_days: int = Field(default=30, ge=1)
    missing_values: list[str] = Field(default_factory=list)
    columns: dict[str, ColumnSpec]
    leakage: list[str] = Field(default_factory=list)
    allow_leaky: list[str] = Field(default_factory=list)
    rule: RuleSpec = Field(default_factory=RuleSpec)
    volume_windows_days: list[int] = Field(default_factory=list)

    def used(self) -> dict[str, ColumnSpec]:
        return {c: s for c, s in self.columns.items() if s.role != "ignore"}


class MappingError(DataError):
    """The mapping or the flat file does not fit; the message names the key or column."""


def matches(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def load_mapping(path: Path | str) -> FlatMapping:
    """Read and validate a mapping YAML; errors name the file and the key."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise MappingError(f"mapping file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
        return FlatMapping.model_validate(data)
    except yaml.YAMLError as exc:
        raise MappingError(f"{path}: not valid YAML: {exc}") from exc
    except ValidationError as exc:
        lines = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise MappingError(f"{path}: invalid mapping:\n  " + "\n  ".join(lines)) from exc
