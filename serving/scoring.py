"""Online scoring: one lead's history → the same features as training → calibrated score, stage, reasons.

The features come from the feature package's single-lead entry point, which runs the very kernel
the batch pipeline uses, so a lead scored online at ``t`` gets exactly the features training
computed for ``(lead, t)``. The model is the registry's scoring bundle, bound to the running feature
code by :meth:`training.bundle.ScoringBundle.bind`, which refuses a bundle whose feature-schema hash
differs (it would be fed columns that mean something else).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from leadscore.config import Settings
from leadscore.errors import ModelError
from leadscore.history import CRMHistory

if TYPE_CHECKING:
    from leadscore.features.online import LeadArrays
    from leadscore.training.bundle import BoundBundle, StagePolicy

BUNDLE_ENV = "LEADSCORE_BUNDLE"
MODEL_URI_ENV = "LEADSCORE_MODEL_URI"


class ModelLoadError(ModelError):
    """The configured model cannot be served; the message says which and why."""


@dataclass(frozen=True)
class ScoreResult:
    lead_id: str
    scored_at: pd.Timestamp
    p_sql: float
    p_opportunity: float
    stage: str
    previous_stage: str | None
    reasons: dict[str, list[str]]
    model_version: str
    #: fit/engagement band ``A1``..``C3`` (:mod:`training.bands`); None for a bundle without cut points
    band: str | None = None


def _online_features(history: CRMHistory | LeadArrays, lead_id: str, as_of: pd.Timestamp,
                     settings: Settings) -> dict[str, Any]:
    """Features of one moment as a name → value mapping (what the bundle's fast path reads): from the
    kernel arrays the event store read, or from a history sent in the request (``POST /score``)."""
    from leadscore.features.online import LeadArrays, compute_arrays, compute_one

    if isinstance(history, LeadArrays):
        return compute_arrays(history, [as_of], settings)[0]
    return dict(compute_one(history, lead_id, as_of, settings))


class Scorer:
    """A bundle bound to the settings whose feature code computes its features, with its stage policy."""

    def __init__(self, bundle: BoundBundle, settings: Settings, source: str) -> None:
        if bundle.stage_policy is None:
            raise ModelLoadError(f"{source}: the bundle has no stage policy (train with the SLA module)")
        self.bundle = bundle
        self.policy: StagePolicy = bundle.stage_policy
        self.settings = settings
        self.source = source
        self.version = str(bundle.version)
        self.schema_hash = str(bundle.schema_hash)

    @classmethod
    def load(cls, settings: Settings, model_uri: str | None = None, bundle_dir: str | Path | None = None) -> Scorer:
        """From a bundle directory if given (or ``$LEADSCORE_BUNDLE``), else from the MLflow registry.

        A registry alias (``models:/leadscore@champion``) is resolved once, here, to a pinned version:
        the whole life of the process serves that version and reports it, even if the alias moves.
        """
        bundle_dir = bundle_dir or os.environ.get(BUNDLE_ENV) or None
        uri = str(bundle_dir) if bundle_dir else (model_uri or os.environ.get(MODEL_URI_ENV) or settings.serving.model_uri)
        from leadscore.training.bundle import SchemaMismatchError
        from leadscore.training.registry import load_bundle

        try:
            bundle = load_bundle(uri, settings)  # bound: refuses another feature schema
        except SchemaMismatchError as exc:
            raise ModelLoadError(f"refusing to serve {uri}: {exc}") from exc
        except Exception as exc:  # registry unreachable, no such alias, not a bundle: say which and why
            raise ModelLoadError(f"cannot load model {uri}: {exc}") from exc
        if bundle.version is None:
            raise ModelLoadError(f"{uri}: the bundle has no version")
        return cls(bundle, settings, uri)

    def features(self, history: CRMHistory | LeadArrays, lead_id: str, as_of: pd.Timestamp) -> dict[str, Any]:
        return _online_features(history, lead_id, as_of, self.settings)

    def score(
        self,
        history: CRMHistory | LeadArrays,
        lead_id: str,
        as_of: pd.Timestamp,
        previous_stage: str | None,
        days_in_stage: float | None = None,
    ) -> ScoreResult:
        row = self.features(history, lead_id, as_of)
        probs, reasons, band = self.bundle.score_row(row, k=3)
        p_sql, p_opp = float(probs["p_sql"]), float(probs["p_opportunity"])
        stage = self.policy.stage(p_sql, p_opp, previous_stage, days_in_stage=days_in_stage)
        return ScoreResult(
            lead_id=lead_id,
            scored_at=pd.Timestamp(as_of),
            p_sql=p_sql,
            p_opportunity=p_opp,
            stage=str(stage),
            previous_stage=previous_stage,
            reasons={"positive": list(reasons["positive"]), "negative": list(reasons["negative"])},
            model_version=self.version,
            band=band,
        )
