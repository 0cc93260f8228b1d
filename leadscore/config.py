"""One typed configuration tree, loaded from ``configs/*.yaml`` and passed explicitly.

Every YAML file in the config directory contributes top-level sections (``activities``, ``rules``,
``sla``, ...). A section may be defined in one file only, so an error can always name the file it came
from. Command-line overrides (``--set training.trials=5``) are applied on top, before validation.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from leadscore.errors import ConfigError
from leadscore.features.config import FeaturesConfig, ICPConfig, MomentsConfig, RulesConfig, TitlesConfig
from leadscore.reasons import ReasonsConfig
from leadscore.serving.config import ServingConfig
from leadscore.tables import SET_BY as SET_BY  # re-exported: defined with the table specs
from leadscore.training.config import SLAConfig, TrainingConfig

CONFIG_DIR_ENV = "LEADSCORE_CONFIG_DIR"

FUNNEL_STAGES = ("subscriber", "lead", "mql", "sql", "opportunity", "customer")
SIDE_STAGES = ("recycled", "disqualified")

T = TypeVar("T")
#: where a settings object keeps what was derived from it (see :meth:`Settings.derived`)
_MEMO = "_leadscore_derived"


class _Strict(BaseModel):
    """Unknown keys are errors (a typo must not be silently ignored); the tree is frozen once loaded,
    so everything derived from it (compiled rules, kernel tables, hashes) stays valid for its life."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ActivityType(_Strict):
    """One entry of the activity catalogue.

    ``label`` is the plain-language noun used in explanations ("pricing page views");
    ``high_intent`` types feed "days since last high-intent activity"; ``negative`` types are
    signals against buying (unsubscribe, bounce).
    """

    name: str
    label: str
    high_intent: bool = False
    negative: bool = False


class StagesConfig(_Strict):
    funnel: list[str] = Field(default_factory=lambda: list(FUNNEL_STAGES))
    side: list[str] = Field(default_factory=lambda: list(SIDE_STAGES))

    @property
    def all(self) -> list[str]:
        return [*self.funnel, *self.side]

    def rank(self, stage: str) -> int:
        """Position in the funnel; side stages rank below ``lead`` so they never count as progress."""
        return self.funnel.index(stage) if stage in self.funnel else -1


class HorizonsConfig(_Strict):
    sql_days: int = Field(default=30, ge=1)
    opp_days: int = Field(default=90, ge=1)


class PathsConfig(_Strict):
    """Where local state lives. Relative paths are relative to the working directory."""

    mlflow_tracking_uri: str = "sqlite:///mlruns.db"
    mlflow_artifacts: str = "mlartifacts"
    event_store_url: str = "sqlite:///leadscore-events.db"
    reports_dir: str = "reports"


class GeneratorConfig(_Strict):
    """Funnel rates the generated CRM is calibrated to (share of the previous stage)."""

    lead_to_mql: float = Field(default=0.25, gt=0, lt=1)
    mql_to_sql: float = Field(default=0.25, gt=0, lt=1)
    sql_to_opportunity: float = Field(default=0.5, gt=0, lt=1)
    opportunity_to_won: float = Field(default=0.25, gt=0, lt=1)
    activities_per_lead: float = Field(default=100.0, gt=0)
    accounts_per_lead: float = Field(default=0.35, gt=0, le=1)
    subscriber_share: float = Field(default=0.2, ge=0, le=1)
    recycle_after_days: int = 45
    disqualify_share_of_mqls: float = Field(default=0.15, ge=0, lt=1)


#: the buying-group roles, in precedence order (the last one is everyone the others do not claim)
BUYING_ROLES = ("decision_maker", "influencer", "user")


class RoleRule(_Strict):
    """Who plays one buying-group role: a lead whose seniority or department is listed (lower case)."""

    seniority: list[str] = Field(default_factory=list)
    departments: list[str] = Field(default_factory=list)


def _default_roles() -> dict[str, RoleRule]:
    return {"decision_maker": RoleRule(seniority=["c_level", "vp"], departments=["executive"]),
            "influencer": RoleRule(seniority=["head", "director", "manager"], departments=["procurement", "finance"])}


class AccountsConfig(_Strict):
    """The account view (``accounts:``): how leads map to buying-group roles, when a role counts as engaged.

    ``roles`` maps ``decision_maker`` and ``influencer`` to the seniorities and departments that make a
    lead play them (checked in that order; everyone else is a ``user``); a role is engaged when one of
    its leads acted itself in the ``engaged_days`` before the moment.
    """

    engaged_days: int = Field(default=30, ge=1)
    roles: dict[str, RoleRule] = Field(default_factory=_default_roles)

    @field_validator("roles")
    @classmethod
    def _known_roles(cls, v: dict[str, RoleRule]) -> dict[str, RoleRule]:
        unknown = sorted(set(v) - set(BUYING_ROLES[:-1]))
        if unknown:
            raise ValueError(f"roles {unknown} are not mappable: map {list(BUYING_ROLES[:-1])} "
                             f"('{BUYING_ROLES[-1]}' is everyone else)")
        return {r: RoleRule(seniority=[x.strip().lower() for x in v[r].seniority],
                            departments=[x.strip().lower() for x in v[r].departments])
                for r in BUYING_ROLES if r in v}


class Settings(_Strict):
    activities: list[ActivityType]
    #: sales touches (actor = sales): kept for the SLA review, never interest (configs/activities.yaml)
    sales_activities: list[ActivityType] = Field(default_factory=list)
    reasons: ReasonsConfig = Field(default_factory=ReasonsConfig)
    stages: StagesConfig = Field(default_factory=StagesConfig)
    horizons: HorizonsConfig = Field(default_factory=HorizonsConfig)
    paths: PathsConfig = Field(default_factory=PathsConfig)
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    moments: MomentsConfig = Field(default_factory=MomentsConfig)
    icp: ICPConfig = Field(default_factory=ICPConfig)
    titles: TitlesConfig = Field(default_factory=TitlesConfig)
    rules: RulesConfig = Field(default_factory=RulesConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    sla: SLAConfig = Field(default_factory=SLAConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    accounts: AccountsConfig = Field(default_factory=AccountsConfig)

    @field_validator("activities")
    @classmethod
    def _unique_types(cls, v: list[ActivityType]) -> list[ActivityType]:
        names = [a.name for a in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate activity types: {dupes}")
        if "other" not in names:
            raise ValueError("the catalogue must contain 'other' (unknown types are mapped to it)")
        return v

    @model_validator(mode="after")
    def _sales_types_apart(self) -> Settings:
        both = sorted(set(self.activity_names) & set(self.sales_activity_names))
        if both:
            raise ValueError(f"activity types listed both as the lead's and as sales touches: {both}")
        return self

    @model_validator(mode="after")
    def _rules_use_known_types(self) -> Settings:
        unknown = sorted(set(self.rules.activity_points) - set(self.activity_names))
        if unknown:
            raise ValueError(f"rules.activity_points names unknown activity types {unknown}")
        return self

    @property
    def activity_names(self) -> list[str]:
        return [a.name for a in self.activities]

    @property
    def sales_activity_names(self) -> list[str]:
        return [a.name for a in self.sales_activities]

    def activity(self, name: str) -> ActivityType:
        for a in self.activities:
            if a.name == name:
                return a
        raise KeyError(name)

    def config_hash(self) -> str:
        """A short stable digest of the whole tree, stored with every model and report."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def with_overrides(self, overrides: list[str]) -> Settings:
        """A new, validated tree with ``section.key=value`` overrides applied (the ``--set`` syntax).

        The way to vary settings (in tests, what-ifs, per-command options): the tree itself is frozen,
        and unlike ``model_copy(update=...)`` this validates the result.
        """
        tree = self.model_dump()
        for item in overrides:
            key_path, value = _parse_override(item)
            _set_path(tree, key_path, value)
        return _validated(tree, {}, "overrides")

    def derived(self, key: str, build: Callable[[Settings], T]) -> T:
        """``build(self)``, computed once per settings object and kept with it.

        For what the feature code compiles from the config (title regexes, kernel lookups, the
        column plan): milliseconds to build, needed on every online request, and never stale because
        the tree is frozen. The memo lives in this object rather than in a module dict keyed on
        ``id()`` (which a later object can reuse); it is not a field (not dumped, hashed or compared),
        a copy made with ``model_copy(update=...)`` starts its own, and pickling leaves it out.
        """
        memo = self.__dict__.get(_MEMO)
        if memo is None or memo[0] is not self:
            memo = (self, {})
            self.__dict__[_MEMO] = memo
        values: dict[str, Any] = memo[1]
        if key not in values:
            values[key] = build(self)
        return values[key]  # type: ignore[no-any-return]

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        state["__dict__"] = {k: v for k, v in state["__dict__"].items() if k != _MEMO}
        return state


def default_config_dir() -> Traversable:
    """``$LEADSCORE_CONFIG_DIR`` if set, else the defaults shipped in the package (``leadscore.configs``).

    The defaults are package data, so an installed leadscore runs from any directory; a deployment's
    own YAML is chosen explicitly (``--config DIR`` or the environment variable), never by the working
    directory happening to hold a ``configs/`` folder.
    """
    env = os.environ.get(CONFIG_DIR_ENV)
    if env:
        return Path(env)
    return resources.files("leadscore.configs")


def mappings_dir() -> Traversable:
    """The flat-table column mappings shipped with the package (``configs/mappings/`` in the repository)."""
    return resources.files("leadscore.configs") / "mappings"


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.key=value")
    key, raw = item.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError(f"override {item!r} names no key")
    return path, yaml.safe_load(raw)


def _set_path(tree: dict[str, Any], path: list[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[path[-1]] = value


def load_settings(config_dir: Path | str | None = None, overrides: list[str] | None = None) -> Settings:
    """Read every ``*.yaml`` in ``config_dir``, apply ``overrides``, validate.

    Raises :class:`ConfigError` naming the key and the file on any problem, so a typo in a YAML file
    stops the command with one readable line instead of a traceback.
    """
    directory: Traversable = Path(config_dir) if config_dir is not None else default_config_dir()
    if not directory.is_dir():
        raise ConfigError(f"config directory {directory} does not exist")
    tree: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for path in sorted((p for p in directory.iterdir() if p.name.endswith(".yaml")), key=lambda p: p.name):
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
        for section, value in data.items():
            if section in tree:
                raise ConfigError(f"section {section!r} is defined in both {origin[section]} and {path}")
            tree[section] = value
            origin[section] = str(path)
    for item in overrides or []:
        key_path, value = _parse_override(item)
        _set_path(tree, key_path, value)
        origin.setdefault(key_path[0], "--set")
    return _validated(tree, origin, f"{directory}/*.yaml")


def _validated(tree: dict[str, Any], origin: dict[str, str], default_origin: str) -> Settings:
    """Validate a raw tree; every problem becomes one line naming the file (``origin``) and the key."""
    try:
        return Settings.model_validate(tree)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
            section = str(err["loc"][0]) if err["loc"] else ""
            lines.append(f"{origin.get(section, default_origin)}: {loc}: {err['msg']}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from exc
