"""The scoring-bundle contract: what training hands to serving, promotion, reports and batch scoring.

One directory, versioned by the MLflow registry: ``bundle.json`` (feature schema and its hash, config
hash, per-target category codes and calibration curve, stage policy, rule definition, training
window, metrics) and one LightGBM model text file per target. Models are stored as LightGBM's own
text format rather than pickles so a bundle loads across Python and library patch versions and can
be read by a human.

A loaded :class:`ScoringBundle` is data only. To score, a consumer calls :meth:`ScoringBundle.bind`
with the settings its features are computed under; that is the one place the feature-schema hash is
compared (a model fed columns that now mean something else would score silently wrong), and the
returned :class:`BoundBundle` is the only object with scoring methods.

Serving scores one lead per request, so the bound bundle has a fast path: encode a row straight into
a float64 array and call ``Booster.predict`` on it (the scikit-learn wrapper costs ~10x per row),
then calibrate with ``np.interp``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, NotRequired, cast

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from typing_extensions import TypedDict

from leadscore.errors import ModelError
from leadscore.features.config import RulesConfig
from leadscore.training.calibration import Calibrator
from leadscore.training.encoding import check_columns, encode_frame
from leadscore.training.reasons import as_mapping, top_reasons

if TYPE_CHECKING:
    from leadscore.config import Settings

BUNDLE_FILE = "bundle.json"
FORMAT_VERSION = 1
TARGETS = ("sql", "opportunity")
OUTPUT_COLUMNS = {"sql": "p_sql", "opportunity": "p_opportunity"}
_FUNNEL_RANK = {"subscriber": 0, "lead": 1, "recycled": 1, "mql": 2, "sql": 3}


class SchemaMismatchError(ModelError):
    """The bundle was trained on a different feature schema than the code computing features now."""


# --------------------------------------------------------------------------------------------------
# Typed parts of bundle.json (TypedDicts: they stay plain JSON dicts, validated when a bundle is read)
# --------------------------------------------------------------------------------------------------


class FeatureColumn(TypedDict):
    """One model input column, in model column order (``features.schema.FeatureSpec`` as stored)."""

    name: str
    dtype: str  # "str" (categorical) or "float64"
    group: NotRequired[str]
    description: NotRequired[str]
    template: NotRequired[str]  # reason sentence with ``{value}``
    missing: NotRequired[str]  # reason sentence for a missing value


class TargetWindow(TypedDict):
    """The month ranges one target was trained, tuned, calibrated and tested on (ISO timestamps)."""

    target: str
    horizon_days: int
    train_start: str
    validation_start: str
    calibration_start: str
    test_start: str
    test_end: str
    months: dict[str, list[str]]
    rows: dict[str, int]
    positives: dict[str, int]


class TrainingWindow(TypedDict):
    cutoff: str
    moments: int
    sql: TargetWindow
    #: absent for a one-label flat table (its bundle holds the sql model only)
    opportunity: NotRequired[TargetWindow]


class TargetMetrics(TypedDict):
    """Test-month metrics of one target: ``test[model][metric] = {value, lo, hi}``."""

    test: dict[str, dict[str, dict[str, float]]]
    calibration_method: str
    #: out-of-fold log loss of each calibration method on the calibration rows (the lower one was chosen)
    calibration_log_loss: dict[str, float]
    capacity_share: float
    share_of_ceiling_lift: float | None


_SCHEMA = TypeAdapter(list[FeatureColumn])
_WINDOW = TypeAdapter(TrainingWindow)
_METRICS = TypeAdapter(dict[str, TargetMetrics])


# --------------------------------------------------------------------------------------------------
# Stage policy
# --------------------------------------------------------------------------------------------------


class StagePolicy(BaseModel):
    """Stage thresholds on calibrated probabilities, the SLA policy that set them, what they promise.

    Fitted by :func:`training.sla.fit_stage_policy`; stored in the bundle as ``model_dump()`` JSON and
    evaluated by the service on every score, so :meth:`stage` is a handful of float comparisons.
    """

    model_config = ConfigDict(extra="forbid")

    mql_threshold: float = Field(description="MQL when calibrated P(SQL within H days) reaches this.")
    sql_threshold: float = Field(description="SQL recommended when calibrated P(opportunity) reaches this.")
    hysteresis: float = Field(ge=0, lt=1, description="Share below a threshold a score must fall to leave.")
    policy: dict[str, Any] = Field(default_factory=dict, description="The SLA policy that set the thresholds.")
    expected: dict[str, Any] = Field(default_factory=dict, description="Outcomes on the months fitted on.")
    rule_mql_threshold: float = Field(description="The rule-based points score's MQL threshold compared with.")
    recycle_after_days: int | None = 45
    sales_owned_stages: list[str] = Field(default_factory=lambda: ["opportunity", "customer", "disqualified"])

    def stage(
        self,
        p_sql: float,
        p_opportunity: float,
        previous_stage: str | None,
        *,
        days_in_stage: float | None = None,
    ) -> str:
        """Recommended lifecycle stage (``lead``, ``mql``, ``sql``; or the unchanged previous stage).

        Why the rules are shaped like this:
        - entering a stage needs the score to reach its threshold (the same crossing the thresholds were
          fitted on); leaving it needs the score to fall ``hysteresis`` (a share) below it, so a lead
          whose score wobbles around the threshold changes stage once, not on every activity;
        - stages set by sales (opportunity, customer, disqualified) are never overridden by a model;
        - ``subscriber`` and ``recycled`` leads stay what they are until they qualify;
        - with ``days_in_stage`` given, an MQL/SQL that made no progress for ``recycle_after_days``
          returns to marketing as ``recycled``; a recycled lead re-qualifies only when it clears the
          threshold by the hysteresis band, i.e. on new evidence, not on the score that was recycled.
        """
        prev = previous_stage or "lead"
        if prev in self.sales_owned_stages:
            return prev
        keep = 1.0 - self.hysteresis
        lift = 1.0 + self.hysteresis
        if prev == "sql":
            sql_bar, mql_bar = self.sql_threshold * keep, self.mql_threshold * keep
        elif prev == "mql":
            sql_bar, mql_bar = self.sql_threshold, self.mql_threshold * keep
        elif prev == "recycled":
            sql_bar, mql_bar = self.sql_threshold * lift, self.mql_threshold * lift
        else:
            sql_bar, mql_bar = self.sql_threshold, self.mql_threshold
        if p_opportunity >= sql_bar:
            new = "sql"
        elif p_sql >= mql_bar:
            new = "mql"
        else:
            new = prev if prev in ("subscriber", "recycled") else "lead"
        if (
            days_in_stage is not None
            and self.recycle_after_days is not None
            and prev in ("mql", "sql")
            and days_in_stage >= self.recycle_after_days
            and _FUNNEL_RANK[new] <= _FUNNEL_RANK[prev]
        ):
            return "recycled"
        return new


# --------------------------------------------------------------------------------------------------
# The bundle
# --------------------------------------------------------------------------------------------------


@dataclass
class TargetModel:
    """One calibrated LightGBM model (a target: ``sql`` or ``opportunity``)."""

    model_str: str
    encodings: dict[str, list[str]]
    calibrator: Calibrator
    params: dict[str, Any] = field(default_factory=dict)
    _booster: Any = field(default=None, repr=False, compare=False)
    _codes: dict[str, dict[str, float]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def booster(self) -> Any:
        if self._booster is None:
            from leadscore.training.tune import import_lightgbm

            lgb = import_lightgbm()
            self._booster = lgb.Booster(model_str=self.model_str)
            self._codes = {name: {v: float(i) for i, v in enumerate(cats)} for name, cats in self.encodings.items()}
        return self._booster

    def to_dict(self) -> dict[str, Any]:
        return {"encodings": self.encodings, "calibrator": self.calibrator.to_dict(), "params": self.params}


@dataclass
class ScoringBundle:
    """A versioned, self-contained scoring artifact (ARCHITECTURE §3): data only, see :meth:`bind`.

    ``version`` is set by :func:`training.registry.load_bundle` from the registry.
    """

    schema: list[FeatureColumn]
    schema_hash: str
    config_hash: str
    models: dict[str, TargetModel]
    stage_policy: StagePolicy | None = None
    rules: RulesConfig = field(default_factory=RulesConfig)
    window: TrainingWindow | None = None
    metrics: dict[str, TargetMetrics] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    version: str | None = None

    @property
    def feature_names(self) -> list[str]:
        return [s["name"] for s in self.schema]

    # ------------------------------------------------------------------ persistence
    def save(self, directory: Path | str) -> Path:
        """Write ``bundle.json`` and ``model_<target>.txt`` into ``directory`` (created)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        doc = {
            "format_version": FORMAT_VERSION,
            "schema": self.schema,
            "schema_hash": self.schema_hash,
            "config_hash": self.config_hash,
            "targets": {t: m.to_dict() for t, m in self.models.items()},
            "stage_policy": None if self.stage_policy is None else self.stage_policy.model_dump(mode="json"),
            "rules": self.rules.model_dump(mode="json"),
            "window": self.window,
            "metrics": self.metrics,
            "info": self.info,
        }
        (directory / BUNDLE_FILE).write_text(json.dumps(doc, indent=1, default=str))
        for target, model in self.models.items():
            (directory / f"model_{target}.txt").write_text(model.model_str)
        return directory

    @classmethod
    def load(cls, directory: Path | str) -> ScoringBundle:
        """Read and validate a bundle written by :meth:`save` (unbound: call :meth:`bind` to score)."""
        directory = Path(directory)
        path = directory / BUNDLE_FILE
        if not path.exists():
            raise ModelError(f"{directory} is not a scoring bundle (no {BUNDLE_FILE})")
        doc = json.loads(path.read_text())
        if doc.get("format_version") != FORMAT_VERSION:
            raise ModelError(f"bundle format {doc.get('format_version')} is not supported (need {FORMAT_VERSION}); "
                             "retrain with this version of leadscore")
        models = {
            t: TargetModel(
                model_str=(directory / f"model_{t}.txt").read_text(),
                encodings={k: list(v) for k, v in d["encodings"].items()},
                calibrator=Calibrator.from_dict(d["calibrator"]),
                params=d.get("params", {}),
            )
            for t, d in doc["targets"].items()
        }
        policy = doc.get("stage_policy")
        window = doc.get("window")
        return cls(
            schema=_SCHEMA.validate_python(doc["schema"]), schema_hash=doc["schema_hash"],
            config_hash=doc["config_hash"], models=models,
            stage_policy=None if policy is None else StagePolicy.model_validate(policy),
            rules=RulesConfig.model_validate(doc["rules"]),
            window=None if window is None else _WINDOW.validate_python(window),
            metrics=_METRICS.validate_python(doc.get("metrics") or {}), info=doc.get("info", {}),
        )

    # ------------------------------------------------------------------ the one schema check
    def bind(self, settings: Settings | None = None, *, schema_hash: str | None = None) -> BoundBundle:
        """The bundle, ready to score features computed under ``settings``; refuses a schema mismatch.

        The expected hash is the one the installed feature code produces under ``settings``
        (:func:`features.schema.schema_hash`). Give ``schema_hash`` instead when the features come
        from elsewhere (a flat-table mapping's hash, a caller-declared hash for the MLflow model).
        Raises :class:`SchemaMismatchError` naming both hashes.
        """
        if (settings is None) == (schema_hash is None):
            raise TypeError("bind() needs exactly one of settings or schema_hash")
        if schema_hash is None:
            from leadscore.features.schema import schema_hash as feature_schema_hash

            assert settings is not None
            expected, source = feature_schema_hash(settings), "the feature code and settings here produce"
        else:
            expected, source = schema_hash, "the features given are declared as"
        if expected != self.schema_hash:
            raise SchemaMismatchError(
                f"the model was trained on feature schema {self.schema_hash}, but {source} schema {expected}; "
                "retrain it (leadscore train) or use the feature code and configuration it was trained with"
            )
        return BoundBundle(**{f.name: getattr(self, f.name) for f in fields(self)})


@dataclass
class BoundBundle(ScoringBundle):
    """A bundle whose feature schema was checked against the caller's: the only one that scores.

    Obtain it from :meth:`ScoringBundle.bind` (or :func:`training.registry.load_bundle`), never by
    constructing it: the constructor does not check anything.
    """

    # ------------------------------------------------------------------ batch scoring
    def encode(self, features: pd.DataFrame, target: str) -> np.ndarray:
        return encode_frame(features, self.schema, self.models[target].encodings)

    def predict_raw(self, features: pd.DataFrame, target: str) -> np.ndarray:
        """Uncalibrated model probability (what the calibrator was fitted on)."""
        return np.asarray(self.models[target].booster.predict(self.encode(features, target)), dtype=np.float64)

    def predict(self, features: pd.DataFrame) -> pd.DataFrame:
        """Calibrated ``p_sql`` and ``p_opportunity``, one row per input row (same index)."""
        check_columns(features, self.schema)
        out = {}
        for target, model in self.models.items():
            out[OUTPUT_COLUMNS[target]] = model.calibrator(self.predict_raw(features, target))
        return pd.DataFrame(out, index=features.index)

    def contributions(self, features: pd.DataFrame, target: str = "sql") -> pd.DataFrame:
        """Per-feature SHAP values (LightGBM ``pred_contrib``, log-odds of the raw model) + ``bias``."""
        contrib = self.models[target].booster.predict(self.encode(features, target), pred_contrib=True)
        return pd.DataFrame(contrib, columns=[*self.feature_names, "bias"], index=features.index)

    # ------------------------------------------------------------------ one-row fast path
    def encode_row(self, row: Mapping[str, Any], target: str) -> np.ndarray:
        """One moment's features (a mapping name → value) as a 1×n float64 array for ``Booster.predict``."""
        model = self.models[target]
        model.booster  # noqa: B018 - builds the code tables on first use
        codes = model._codes
        x = np.empty((1, len(self.schema)), dtype=np.float64)
        for j, spec in enumerate(self.schema):
            name = spec["name"]
            try:
                v = row[name]
            except KeyError:
                raise ValueError(f"feature {name!r} is missing from the row") from None
            if spec["dtype"] == "str":
                x[0, j] = codes[name].get(str(v), np.nan) if v is not None and v == v else np.nan
            else:
                x[0, j] = np.nan if v is None else float(v)
        return x

    def predict_row(self, row: Mapping[str, Any]) -> dict[str, float]:
        """Calibrated probabilities for one moment: ``{"p_sql": ..., "p_opportunity": ...}``."""
        out = {}
        for target, model in self.models.items():
            # one row: a single thread (waking an OpenMP team costs more than the prediction)
            raw = model.booster.predict(self.encode_row(row, target), num_threads=1)
            out[OUTPUT_COLUMNS[target]] = float(np.interp(raw[0], model.calibrator.x, model.calibrator.y))
        return out

    def reason_details(self, features_row: Any, k: int = 3, target: str = "sql") -> dict[str, list[dict[str, Any]]]:
        """Top ``k`` positive and negative contributions with feature, value, contribution and text."""
        row = as_mapping(features_row)
        contrib = self.models[target].booster.predict(self.encode_row(row, target), pred_contrib=True,
                                                      num_threads=1)[0]
        return top_reasons(self.schema, row, contrib[: len(self.schema)], k)  # the last column is the bias

    def reasons(self, features_row: Any, k: int = 3, target: str = "sql") -> dict[str, list[str]]:
        """The top ``k`` reasons for and against, in plain words from the schema templates."""
        d = self.reason_details(features_row, k=k, target=target)
        return {side: [i["text"] for i in items] for side, items in d.items()}


def schema_dicts(schema: Sequence[Any]) -> list[FeatureColumn]:
    """The feature schema as plain dicts (what the bundle stores)."""
    from leadscore.training.encoding import spec_to_dict

    return cast(list[FeatureColumn], [spec_to_dict(s) for s in schema])
