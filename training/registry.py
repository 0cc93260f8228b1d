"""Reading bundles and their scored frames back from the MLflow registry.

Serving, reports and the promotion gate all name a model by URI (``models:/leadscore@champion``); an
alias moves, so we resolve it to a pinned version number once and record that number on the bundle
(``bundle.version``) — every score then says exactly which model produced it. What comes back is
already bound (:meth:`ScoringBundle.bind`): a caller cannot get a scorable model from the registry
without the feature-schema check.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pandas as pd

from leadscore.config import Settings
from leadscore.errors import ModelError
from leadscore.training.bundle import BUNDLE_FILE, BoundBundle, ScoringBundle
from leadscore.training.tracking import configure_mlflow

_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


class ModelNotFoundError(ModelError):
    """The URI names no registered model version (e.g. no champion has been promoted yet)."""


def resolve_version(model_uri: str, settings: Settings) -> tuple[str, str]:
    """``models:/name@alias`` or ``models:/name/3`` → ``(name, "3")``."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    m = _URI.match(model_uri)
    if not m:
        raise ModelNotFoundError(f"model URI {model_uri!r} must look like models:/NAME@ALIAS or models:/NAME/VERSION")
    configure_mlflow(settings)
    name, alias, version = m["name"], m["alias"], m["version"]
    client = MlflowClient()
    try:
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except MlflowException as exc:
        hint = " (run `leadscore train`, then `leadscore promote`)" if alias else ""
        raise ModelNotFoundError(f"no model version for {model_uri}{hint}: {exc.message}") from exc
    return name, str(mv.version)


def _download_model(name: str, version: str, dst: Path) -> Path:
    import mlflow

    local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=str(dst))
    found = next(Path(local).rglob(BUNDLE_FILE), None)
    if found is None:
        raise ModelNotFoundError(f"models:/{name}/{version} holds no scoring bundle")
    return found.parent


def load_bundle(model_uri: str, settings: Settings, *, schema_hash: str | None = None) -> BoundBundle:
    """Load a bundle from the registry (or a local bundle directory), bind it and pin its version.

    Bound to ``settings``' feature schema, or to ``schema_hash`` when the features come from elsewhere
    (a flat-table mapping); raises :class:`~training.bundle.SchemaMismatchError` on a mismatch.
    ``bundle.version`` becomes the registry version number, or for a directory ``local:`` and a digest
    of its files: it names the model, not where it lies, and fits the audit table's 64-character
    ``model_version`` (a path did not, once a directory sat deep enough).
    """
    path = Path(model_uri)
    if not model_uri.startswith("models:/") and (path / BUNDLE_FILE).exists():
        bundle = ScoringBundle.load(path)
        version = f"local:{_digest(path)}"
    else:
        name, version = resolve_version(model_uri, settings)
        with tempfile.TemporaryDirectory(prefix="leadscore-bundle-") as tmp:
            bundle = ScoringBundle.load(_download_model(name, version, Path(tmp)))
    bound = bundle.bind(schema_hash=schema_hash) if schema_hash is not None else bundle.bind(settings)
    bound.version = version
    return bound


def _digest(directory: Path) -> str:
    """A short content digest of a bundle directory (file names and bytes, in a stable order)."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted(p for p in directory.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(directory)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def run_id_of(model_uri: str, settings: Settings) -> str:
    """The training run that logged the model version ``model_uri`` resolves to."""
    from mlflow import MlflowClient

    name, version = resolve_version(model_uri, settings)
    return str(MlflowClient().get_model_version(name, version).run_id)


def load_scored(model_uri: str, settings: Settings) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The scored frames the training run logged: (validation+calibration months, test months).

    Columns: ``lead_id, as_of, p_sql, p_opportunity, rule_score, y_sql, y_opp, source, industry,
    employee_band, days_since_created``.
    """
    import mlflow

    run_id = run_id_of(model_uri, settings)
    with tempfile.TemporaryDirectory(prefix="leadscore-scored-") as tmp:
        frames = []
        for name in ("calibration", "test"):
            local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=f"scored/{name}.parquet",
                                                        dst_path=tmp)
            frames.append(pd.read_parquet(local))
    return frames[0], frames[1]
