"""The scoring bundle: everything serving needs to turn features into calibrated, explained scores.

One directory, versioned by the MLflow registry: ``bundle.json`` (feature schema and its hash, config
hash, per-target category codes and calibration curve, stage policy, rule definition, training
window, metrics) and one LightGBM model text file per target. Models are stored as LightGBM's own
text format rather than pickles so a bundle loads across Python and library patch versions and can
be read by a human.

Serving scores one lead per request, so the bundle has a fast path: encode a row straight into a
float64 array and call ``Booster.predict`` on it (the scikit-learn wrapper costs ~10x per row), then
calibrate with ``np.interp``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from leadscore.errors import ModelError
from leadscore.features.schema import missing_text
from leadscore.training.calibration import Calibrator
from leadscore.training.encoding import check_columns, encode_frame

BUNDLE_FILE = "bundle.json"
FORMAT_VERSION = 1
TARGETS = ("sql", "opportunity")
OUTPUT_COLUMNS = {"sql": "p_sql", "opportunity": "p_opportunity"}


class SchemaMismatchError(ModelError):
    """The bundle was trained on a different feature schema than the code computing features now."""


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


def _is_missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, (float, np.floating)) and math.isnan(value))


def _format_value(value: Any) -> str:
    if _is_missing(value):
        return "none"
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if v.is_integer():
            return str(int(v))
        return f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"
    return str(value)


@dataclass
class ScoringBundle:
    """A versioned, self-contained scoring artifact (ARCHITECTURE §3).

    ``schema`` is the feature schema (FeatureSpec dicts, in model column order); ``stage_policy`` is a
    ``training.sla.StagePolicy`` (None if the SLA module was not available when training);
    ``version`` is set by :func:`training.registry.load_bundle` from the registry.
    """

    schema: list[dict[str, Any]]
    schema_hash: str
    config_hash: str
    models: dict[str, TargetModel]
    stage_policy: Any = None
    rules: dict[str, Any] = field(default_factory=dict)
    window: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    version: str | None = None

    # ------------------------------------------------------------------ persistence
    def save(self, directory: Path | str) -> Path:
        """Write ``bundle.json`` and ``model_<target>.txt`` into ``directory`` (created)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        policy = self.stage_policy
        if policy is not None and hasattr(policy, "model_dump"):
            policy = policy.model_dump(mode="json")
        doc = {
            "format_version": FORMAT_VERSION,
            "schema": self.schema,
            "schema_hash": self.schema_hash,
            "config_hash": self.config_hash,
            "targets": {t: m.to_dict() for t, m in self.models.items()},
            "stage_policy": policy,
            "rules": self.rules,
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
        """Read a bundle written by :meth:`save`; the stage policy is revalidated as a StagePolicy."""
        directory = Path(directory)
        path = directory / BUNDLE_FILE
        if not path.exists():
            raise ModelError(f"{directory} is not a scoring bundle (no {BUNDLE_FILE})")
        doc = json.loads(path.read_text())
        if doc.get("format_version") != FORMAT_VERSION:
            raise ModelError(f"bundle format {doc.get('format_version')} is not supported (need {FORMAT_VERSION})")
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
        if policy is not None:
            try:
                from leadscore.training.sla import StagePolicy

                policy = StagePolicy.model_validate(policy)
            except ImportError:
                pass
        return cls(
            schema=doc["schema"], schema_hash=doc["schema_hash"], config_hash=doc["config_hash"], models=models,
            stage_policy=policy, rules=doc.get("rules", {}), window=doc.get("window", {}),
            metrics=doc.get("metrics", {}), info=doc.get("info", {}),
        )

    # ------------------------------------------------------------------ checks
    @property
    def feature_names(self) -> list[str]:
        return [s["name"] for s in self.schema]

    def check_schema(self, schema_hash: str) -> None:
        """Refuse to score with features computed by different feature code."""
        if schema_hash != self.schema_hash:
            raise SchemaMismatchError(
                f"the model was trained on feature schema {self.schema_hash} but the feature code now "
                f"produces schema {schema_hash}; retrain (leadscore train) before serving this code"
            )

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
        row = _as_mapping(features_row)
        contrib = self.models[target].booster.predict(self.encode_row(row, target), pred_contrib=True,
                                                      num_threads=1)[0]
        contrib = contrib[: len(self.schema)]  # the last column is the bias
        # only the k strongest each way are put into words (ties keep schema order)
        pos = [int(j) for j in np.argsort(-contrib, kind="stable")[:k] if contrib[j] > 0]
        neg = [int(j) for j in np.argsort(contrib, kind="stable")[:k] if contrib[j] < 0]
        return {"positive": [self._reason(row, j, float(contrib[j])) for j in pos],
                "negative": [self._reason(row, j, float(contrib[j])) for j in neg]}

    def _reason(self, row: Mapping[str, Any], j: int, contribution: float) -> dict[str, Any]:
        spec = self.schema[j]
        value = row[spec["name"]]
        if _is_missing(value):
            text = spec.get("missing") or missing_text(spec["name"])  # flat schemas and older bundles have none
        else:
            text = (spec.get("template") or f"{spec['name']}: {{value}}").format(value=_format_value(value))
        return {"feature": spec["name"], "value": _format_value(value), "contribution": contribution, "text": text}

    def reasons(self, features_row: Any, k: int = 3, target: str = "sql") -> dict[str, list[str]]:
        """The top ``k`` reasons for and against, in plain words from the schema templates."""
        d = self.reason_details(features_row, k=k, target=target)
        return {side: [i["text"] for i in items] for side, items in d.items()}


def _as_mapping(features_row: Any) -> Mapping[str, Any]:
    if isinstance(features_row, pd.DataFrame):
        if len(features_row) != 1:
            raise ValueError(f"reasons() explains one row; got {len(features_row)}")
        return features_row.iloc[0].to_dict()
    if isinstance(features_row, pd.Series):
        return features_row.to_dict()
    if isinstance(features_row, Mapping):
        return features_row
    raise TypeError(f"expected a mapping, Series or one-row DataFrame, got {type(features_row).__name__}")


def schema_dicts(schema: Sequence[Any]) -> list[dict[str, Any]]:
    """The feature schema as plain dicts (what the bundle stores)."""
    from leadscore.training.encoding import spec_to_dict

    return [spec_to_dict(s) for s in schema]
