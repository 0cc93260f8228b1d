"""Where MLflow keeps runs and models: the one place every part of leadscore asks.

Training, promotion, serving and reports must all talk to the same store, so the decision lives in
one function. ``MLFLOW_TRACKING_URI`` (the MLflow convention) wins over the config; with the default
SQLite store we pin the experiment's artifact location explicitly, because MLflow would otherwise
scatter artifacts into ``./mlruns`` relative to whatever directory a command happened to run in.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from leadscore.config import Settings
from leadscore.env import set_offline_env

ARTIFACTS_ENV = "LEADSCORE_MLFLOW_ARTIFACTS"


def artifact_root(settings: Settings) -> Path:
    """The local directory under which experiments store artifacts (``$LEADSCORE_MLFLOW_ARTIFACTS`` wins)."""
    return Path(os.environ.get(ARTIFACTS_ENV) or settings.paths.mlflow_artifacts).resolve()


def configure_mlflow(settings: Settings) -> str:
    """Point MLflow at the tracking store and return its URI.

    A relative ``sqlite:///file.db`` in the config means "in the working directory"; the same
    URI is set for the registry so aliases and runs live in one database.
    """
    set_offline_env()
    # download progress bars are noise in CLI output and test logs
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    uri = os.environ.get("MLFLOW_TRACKING_URI") or settings.paths.mlflow_tracking_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def ensure_experiment(name: str, settings: Settings) -> str:
    """Create (with an explicit local artifact location) or fetch an experiment; return its id."""
    import mlflow

    configure_mlflow(settings)
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    location = artifact_root(settings) / name
    location.mkdir(parents=True, exist_ok=True)
    try:
        return str(mlflow.create_experiment(name, artifact_location=location.as_uri()))
    except Exception:
        # Another process created it between our lookup and create: use theirs.
        again = mlflow.get_experiment_by_name(name)
        if again is None:
            raise
        return str(again.experiment_id)


def git_commit(cwd: Path | None = None) -> str:
    """The commit of the code that trained a model ("unknown" outside a git checkout)."""
    where = cwd or Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=where, capture_output=True, text=True
    ).stdout.strip()
    return out.stdout.strip() + ("+dirty" if dirty else "")
