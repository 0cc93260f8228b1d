"""The scoring-bundle contract: what training hands to serving, promotion, reports and batch scoring.

One directory, versioned by the MLflow registry: ``bundle.json`` (feature schema and its hash, config
hash, per-target category codes and calibration curve, stage policy, rule definition, training
window, metrics) and one LightGBM model text file per target that uses trees. Models are stored as
LightGBM's own text format and the logistic model as its coefficients in ``bundle.json``
(:class:`training.linear.LinearModel`), never as pickles, so a bundle loads across Python and library
patch versions and can be read by a human.

A target's model is of one ``kind`` (format 2): ``lightgbm``, ``logistic`` or ``blend`` (the two in
log-odds, see :mod:`training.choice`); the calibration curve maps that kind's raw probability. Format-1
bundles (before the kind existed) load as ``lightgbm``.

A loaded :class:`ScoringBundle` is data only. To score, a consumer calls :meth:`ScoringBundle.bind`
with the settings its features are computed under; that is the one place the feature-schema hash is
compared (a model fed columns that now mean something else would score silently wrong), and the
returned :class:`BoundBundle` is the only object with scoring methods.

Serving scores one lead per request, so the bound bundle has a one-row path (:mod:`training.row_path`):
the row encoded once into a float64 vector, the trees through LightGBM's single-row C predictor, the
logistic terms vectorised, calibration by ``np.interp``; :meth:`BoundBundle.score_row` gives the
probabilities and the reasons of one row from one encoding.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, NotRequired, cast

import numpy as np
import pandas as pd
from pydantic import TypeAdapter
from typing_extensions import TypedDict

from leadscore.errors import ModelError
from leadscore.features.config import RulesConfig
from leadscore.reasons import Attribution
from leadscore.training.account_calibration import AccountCalibrator
from leadscore.training.bands import BandCuts, band_labels
from leadscore.training.calibration import Calibrator
from leadscore.training.config import ModelKind
from leadscore.training.encoding import check_columns, encode_frame
from leadscore.training.linear import FrameColumns, LinearModel, blend_probability
from leadscore.training.reasons import ReasonPlan, as_mapping, reason_plan, top_reasons
from leadscore.training.row_path import RowScorer
from leadscore.training.stage_policy import StagePolicy

if TYPE_CHECKING:
    from leadscore.config import Settings
    from leadscore.training.attribution import PathModel

BUNDLE_FILE = "bundle.json"
FORMAT_VERSION = 2
#: formats this code reads (1: every target a LightGBM model, no ``kind``)
READABLE_FORMATS = (1, 2)
MODEL_KINDS: tuple[ModelKind, ...] = ("lightgbm", "logistic", "blend")
TARGETS = ("sql", "opportunity")
OUTPUT_COLUMNS = {"sql": "p_sql", "opportunity": "p_opportunity"}
_ROW_LOCK = threading.Lock()


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
    concept: NotRequired[str]  # reasons sum the columns of one concept (training.reasons)
    unit: NotRequired[str]  # how a value reads in a reason
    rank: NotRequired[int]  # which column of its concept words the reason (lowest applicable first)
    value_texts: NotRequired[dict[str, str]]  # whole sentences for known category values
    only_for: NotRequired[bool]  # a present value reads as a buying signal: never a reason against


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
    #: end of everything the shipped model saw (the refit's last month; the test start without a refit)
    fitted_end: NotRequired[str]
    #: the production refit: its fit and calibration months, rows and positives (absent without a refit)
    refit: NotRequired[dict[str, Any]]


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
    #: the shipped kind and the backtest choices that made it (recency, candidates' log loss)
    model: NotRequired[dict[str, Any]]


_SCHEMA = TypeAdapter(list[FeatureColumn])
_WINDOW = TypeAdapter(TrainingWindow)
_METRICS = TypeAdapter(dict[str, TargetMetrics])


# --------------------------------------------------------------------------------------------------
# The bundle
# --------------------------------------------------------------------------------------------------


@dataclass
class TargetModel:
    """One calibrated model for a target (``sql`` or ``opportunity``) of one ``kind`` (module docstring).

    ``model_str`` (LightGBM text) is there for ``lightgbm`` and ``blend``, ``linear`` for ``logistic`` and
    ``blend``, ``blend_weight`` (the trees' weight in log-odds) for ``blend``.
    """

    model_str: str | None
    encodings: dict[str, list[str]]
    calibrator: Calibrator
    params: dict[str, Any] = field(default_factory=dict)
    kind: ModelKind = "lightgbm"
    linear: LinearModel | None = None
    blend_weight: float | None = None
    _booster: Any = field(default=None, repr=False, compare=False)
    _paths: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ModelError(f"unknown model kind {self.kind!r} (known: {', '.join(MODEL_KINDS)})")
        if self.uses_trees and not self.model_str:
            raise ModelError(f"a {self.kind} model needs its LightGBM model text")
        if self.kind != "lightgbm" and self.linear is None:
            raise ModelError(f"a {self.kind} model needs its logistic coefficients")
        if self.kind == "blend" and self.blend_weight is None:
            raise ModelError("a blend model needs its blend weight")

    @property
    def uses_trees(self) -> bool:
        return self.kind in ("lightgbm", "blend")

    @property
    def booster(self) -> Any:
        if self._booster is None:
            from leadscore.training.tune import import_lightgbm

            lgb = import_lightgbm()
            self._booster = lgb.Booster(model_str=self.model_str)
        return self._booster

    def path_model(self, n_features: int) -> PathModel:
        """The trees compiled for the path attribution (:mod:`training.attribution`), built once."""
        if self._paths is None:
            from leadscore.training.attribution import compile_booster  # numba: imported when first used

            assert self.model_str is not None
            self._paths = compile_booster(self.model_str, n_features)
        return self._paths  # type: ignore[no-any-return]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "encodings": self.encodings, "calibrator": self.calibrator.to_dict(),
                "params": self.params, "linear": None if self.linear is None else self.linear.to_dict(),
                "blend_weight": self.blend_weight}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], model_str: str | None) -> TargetModel:
        linear = d.get("linear")
        return cls(model_str=model_str, encodings={k: list(v) for k, v in d["encodings"].items()},
                   calibrator=Calibrator.from_dict(d["calibrator"]), params=d.get("params", {}),
                   kind=d.get("kind", "lightgbm"), linear=None if linear is None else LinearModel.from_dict(linear),
                   blend_weight=d.get("blend_weight"))

    def combine(self, p_trees: np.ndarray | None, p_linear: np.ndarray | None) -> np.ndarray:
        """The raw probability of this kind from its parts' raw probabilities."""
        if self.kind == "lightgbm":
            return np.asarray(p_trees)
        if self.kind == "logistic":
            return np.asarray(p_linear)
        assert p_trees is not None and p_linear is not None and self.blend_weight is not None
        return blend_probability(p_trees, p_linear, self.blend_weight)

    def combine_contributions(self, trees: np.ndarray | None, linear: np.ndarray | None) -> np.ndarray:
        """Per-feature log-odds contributions of this kind (the blend weighs both like its scores)."""
        if self.kind == "lightgbm":
            return np.asarray(trees)
        if self.kind == "logistic":
            return np.asarray(linear)
        assert trees is not None and linear is not None and self.blend_weight is not None
        return self.blend_weight * trees + (1.0 - self.blend_weight) * linear


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
    #: the fit/engagement grid's cut points (:mod:`training.bands`); None in bundles from before it
    bands: BandCuts | None = None
    #: the account score's calibration map (:mod:`training.account_calibration`); None: raw noisy-OR
    account_calibration: AccountCalibrator | None = None
    #: how the trees' contributions are attributed (``reasons.attribution`` at training; the band cut
    #: points were fitted on it); bundles from before the choice used TreeSHAP
    attribution: Attribution = "path"

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
            "bands": None if self.bands is None else self.bands.to_dict(),
            "account_calibration": None if self.account_calibration is None else self.account_calibration.to_dict(),
            "attribution": self.attribution,
        }
        (directory / BUNDLE_FILE).write_text(json.dumps(doc, indent=1, default=str))
        for target, model in self.models.items():
            if model.model_str is not None:
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
        if doc.get("format_version") not in READABLE_FORMATS:
            raise ModelError(f"bundle format {doc.get('format_version')} is not supported (this version reads "
                             f"{', '.join(map(str, READABLE_FORMATS))}); retrain with this version of leadscore")

        def model_text(target: str) -> str | None:
            path = directory / f"model_{target}.txt"
            return path.read_text() if path.exists() else None

        models = {t: TargetModel.from_dict(d, model_text(t)) for t, d in doc["targets"].items()}
        policy = doc.get("stage_policy")
        window = doc.get("window")
        bands = doc.get("bands")
        account_cal = doc.get("account_calibration")
        return cls(
            schema=_SCHEMA.validate_python(doc["schema"]), schema_hash=doc["schema_hash"],
            config_hash=doc["config_hash"], models=models,
            stage_policy=None if policy is None else StagePolicy.model_validate(policy),
            rules=RulesConfig.model_validate(doc["rules"]),
            window=None if window is None else _WINDOW.validate_python(window),
            metrics=_METRICS.validate_python(doc.get("metrics") or {}), info=doc.get("info", {}),
            bands=None if bands is None else BandCuts.from_dict(bands), attribution=doc.get("attribution", "shap"),
            account_calibration=None if account_cal is None else AccountCalibrator.from_dict(account_cal),
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

    #: what the one-row path keeps across calls: the concept plan, the single-row scorer
    _reasons: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    # ------------------------------------------------------------------ batch scoring
    def encode(self, features: pd.DataFrame, target: str) -> np.ndarray:
        return encode_frame(features, self.schema, self.models[target].encodings)

    def predict_raw(self, features: pd.DataFrame, target: str, cols: FrameColumns | None = None) -> np.ndarray:
        """Uncalibrated probability of the target's model kind (what the calibrator was fitted on);
        ``cols``: the frame's columns as already converted for another target's logistic model."""
        from leadscore.training.batch_explain import encode_shared

        m = self.models[target]
        cols = cols or FrameColumns(features)
        trees = m.booster.predict(encode_shared(self, features, target, cols)) if m.uses_trees else None
        linear = m.linear.predict_columns(cols) if m.linear is not None and m.kind != "lightgbm" else None
        return np.asarray(m.combine(trees, linear), dtype=np.float64)

    def predict(self, features: pd.DataFrame) -> pd.DataFrame:
        """Calibrated ``p_sql`` and ``p_opportunity``, one row per input row (same index)."""
        check_columns(features, self.schema)
        cols = FrameColumns(features)
        out = {}
        for target, model in self.models.items():
            out[OUTPUT_COLUMNS[target]] = model.calibrator(self.predict_raw(features, target, cols))
        return pd.DataFrame(out, index=features.index)

    def tree_contributions(self, x: np.ndarray, target: str) -> np.ndarray:
        """The trees' contributions of encoded rows ``x`` + the bias as the last column, by the bundle's
        ``attribution``: the path attribution (:mod:`training.attribution`) or LightGBM's TreeSHAP."""
        m = self.models[target]
        if self.attribution == "shap":
            return np.asarray(m.booster.predict(x, pred_contrib=True))
        paths = m.path_model(len(self.schema))
        _, contrib = paths.margins(x)
        return np.column_stack([contrib, np.full(len(contrib), paths.bias)])

    def contributions(self, features: pd.DataFrame, target: str = "sql") -> pd.DataFrame:
        """Per-feature contributions in log-odds of the raw model + ``bias``: the trees' (path attribution
        or TreeSHAP, :meth:`tree_contributions`), the logistic model's exact linear SHAP values, or their blend."""
        m = self.models[target]
        n = len(self.schema)
        trees = linear = None
        if m.uses_trees:
            trees = self.tree_contributions(self.encode(features, target), target)
        if m.linear is not None and m.kind != "lightgbm":
            c = m.linear.contributions(features)[self.feature_names].to_numpy()
            linear = np.column_stack([c, np.full(len(features), m.linear.offset)])
        contrib = m.combine_contributions(trees, linear)
        return pd.DataFrame(contrib[:, : n + 1], columns=[*self.feature_names, "bias"], index=features.index)

    def predict_explained(self, features: pd.DataFrame, target: str = "sql") -> tuple[pd.DataFrame, np.ndarray]:
        """:meth:`predict` and :meth:`contributions` of ``target`` (schema columns, no bias) from one encoding
        and one set of logistic terms per target (batch scoring); with the path attribution the walk that
        attributes ``target`` also gives its trees' probability, as on the one-row path
        (:mod:`training.batch_explain`)."""
        from leadscore.training.batch_explain import explain_frame

        return explain_frame(self, features, target)

    # ------------------------------------------------------------------ one-row fast path
    def _row(self) -> RowScorer:
        """The single-row path (:mod:`training.row_path`), built on first use and kept."""
        scorer = self._reasons.get("row")
        if scorer is None:
            with _ROW_LOCK:
                scorer = self._reasons.get("row")
                if scorer is None:
                    scorer = self._reasons["row"] = RowScorer(self.schema, self.models, self.attribution)
        return scorer  # type: ignore[no-any-return]

    def _reason_plan(self) -> ReasonPlan:
        plan = self._reasons.get("plan")
        if plan is None:
            plan = self._reasons.setdefault("plan", reason_plan(self.schema))  # one plan if two threads race
        return plan  # type: ignore[no-any-return]

    def encode_row(self, row: Mapping[str, Any], target: str) -> np.ndarray:
        """One moment's features (a mapping name → value) as a 1×n float64 array for ``Booster.predict``."""
        scorer = self._row()
        return scorer.x(scorer.encode(row), target)

    def predict_row(self, row: Mapping[str, Any]) -> dict[str, float]:
        """Calibrated probabilities for one moment: ``{"p_sql": ..., "p_opportunity": ...}``."""
        scorer = self._row()
        return {OUTPUT_COLUMNS[t]: p for t, p in scorer.probabilities(scorer.encode(row)).items()}

    def row_contributions(self, features_row: Any, target: str = "sql") -> np.ndarray:
        """One row's per-feature log-odds contributions in schema order (no bias), as :meth:`contributions`."""
        scorer = self._row()
        return scorer.contributions(scorer.encode(as_mapping(features_row)), target)

    def reason_details(self, features_row: Any, k: int = 3, target: str = "sql") -> dict[str, list[dict[str, Any]]]:
        """Top ``k`` concepts for and against: ``{concept, feature, value, contribution, text}`` each
        (see :mod:`training.reasons`; contributions summed per concept, zero counts never a reason)."""
        row = as_mapping(features_row)
        return top_reasons(self._reason_plan(), row, self.row_contributions(row, target), k)

    def explain(self, features_row: Any, k: int = 3) -> tuple[dict[str, list[str]], str | None]:
        """The reasons of :meth:`reasons` and the fit/engagement band (:mod:`training.bands`) from one
        TreeSHAP of the row (the band sums the same contributions the reasons do)."""
        row = as_mapping(features_row)
        contrib = self.row_contributions(row, "sql")
        d = top_reasons(self._reason_plan(), row, contrib, k)
        band = band_labels(contrib, self.schema, self.bands)[0] if self.bands is not None else None
        return {side: [i["text"] for i in items] for side, items in d.items()}, band

    def reasons(self, features_row: Any, k: int = 3, target: str = "sql") -> dict[str, list[str]]:
        """The top ``k`` reasons for and against, in plain words from the schema templates."""
        d = self.reason_details(features_row, k=k, target=target)
        return {side: [i["text"] for i in items] for side, items in d.items()}

    def score_row(self, row: Mapping[str, Any],
                  k: int = 3) -> tuple[dict[str, float], dict[str, list[str]], str | None]:
        """:meth:`predict_row`, :meth:`explain`'s reasons and band of one row, reading and encoding it
        once and attributing it once (what serving calls per request; a path walk's margin also gives
        the sql probability)."""
        scorer = self._row()
        enc = scorer.encode(row)
        contrib = scorer.contributions(enc, "sql")
        probs = {OUTPUT_COLUMNS[t]: p for t, p in scorer.probabilities(enc).items()}
        d = top_reasons(self._reason_plan(), row, contrib, k)
        band = band_labels(contrib, self.schema, self.bands)[0] if self.bands is not None else None
        return probs, {side: [i["text"] for i in items] for side, items in d.items()}, band


def schema_dicts(schema: Sequence[Any]) -> list[FeatureColumn]:
    """The feature schema as plain dicts (what the bundle stores)."""
    from leadscore.training.encoding import spec_to_dict

    return cast(list[FeatureColumn], [spec_to_dict(s) for s in schema])
