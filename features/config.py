"""Config sections owned by the features package: windows, moments sampling, ICP, title rules, rule score."""

from __future__ import annotations

import itertools

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FamilySwitch(_Strict):
    """One feature family's switch and parameters under ``features.families.<name>``.

    ``enabled`` overrides the family's default; the other keys are the family's own parameters, checked
    against the family's declared parameter model when the registry resolves (so a typo is an error
    naming the family, not a silently ignored key).
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    enabled: bool | None = None


class FeaturesConfig(_Strict):
    """Interest-signal windows (what "recent" means, in days) and which feature families run.

    ``account_window_days`` is the span of the account roll-ups ("activities by colleagues in the last
    30 days"); ``families`` switches families on or off and sets their own parameters (see
    :mod:`features.families`). Both were added after trained models existed: at their defaults they
    leave :func:`features.schema.schema_hash` unchanged.
    """

    windows_days: list[int] = Field(default_factory=lambda: [1, 7, 30, 90])
    half_lives_days: list[float] = Field(default_factory=lambda: [3.0, 14.0, 60.0])
    velocity_recent_days: int = 7
    velocity_base_days: int = 28
    account_window_days: int = Field(default=30, ge=1)
    families: dict[str, FamilySwitch] = Field(default_factory=dict)
    #: upper-exclusive edges of the company size bands ("1-9", "10-49", ..., "5000+")
    employee_band_edges: list[int] = Field(default_factory=lambda: [10, 50, 250, 1000, 5000])
    #: upper-exclusive edges of the annual revenue bands, in the CRM's currency
    revenue_band_edges: list[float] = Field(default_factory=lambda: [1e6, 1e7, 5e7, 2.5e8, 1e9])

    @field_validator("windows_days", "half_lives_days")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        if not v or any(x <= 0 for x in v):
            raise ValueError("must be a non-empty list of positive numbers")
        return v

    @field_validator("employee_band_edges", "revenue_band_edges")
    @classmethod
    def _increasing(cls, v: list[float]) -> list[float]:
        if any(b <= a for a, b in itertools.pairwise(v)) or any(x <= 0 for x in v):
            raise ValueError("band edges must be positive and strictly increasing")
        return v


class MomentsConfig(_Strict):
    """Which scoring moments become training rows.

    Every activity of a not-yet-SQL lead is a moment the CRM would have called us; very active leads
    would dominate the training set, so we keep at most ``max_per_lead`` moments per lead, at least
    ``min_gap_hours`` apart, chosen reproducibly from ``seed``.
    """

    max_per_lead: int = Field(default=12, ge=1)
    min_gap_hours: float = Field(default=24.0, ge=0)
    seed: int = 0


class ICPConfig(_Strict):
    """The ideal customer profile that marketing and sales agreed on."""

    industries: list[str] = Field(default_factory=list)
    employees_min: int = 0
    employees_max: int = 10**9
    countries: list[str] = Field(default_factory=list)


class TitleRule(_Strict):
    """A case-insensitive regular expression on the free-text job title and what it implies."""

    pattern: str
    value: str


class TitlesConfig(_Strict):
    """Job title → seniority and department, first matching rule wins; several languages."""

    seniority: list[TitleRule] = Field(default_factory=list)
    department: list[TitleRule] = Field(default_factory=list)
    free_mail_domains: list[str] = Field(default_factory=list)


class AttributePoints(_Strict):
    """Points for a lead or account attribute (fit), e.g. seniority in [vp, c_level] → +10."""

    field: str
    values: list[str] | None = None
    min: float | None = None
    max: float | None = None
    points: float


class RulesConfig(_Strict):
    """The hand-written points rule (HubSpot/Mautic style) that the models are compared with."""

    activity_points: dict[str, float] = Field(default_factory=dict)
    half_life_days: float | None = 30.0
    window_days: int | None = None
    attribute_points: list[AttributePoints] = Field(default_factory=list)
    mql_threshold: float = 50.0
