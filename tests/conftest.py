"""Shared test setup: offline tools, a private MLflow store, and small generated CRMs.

Fixtures here are shared by every tier (features, training, SLA, serving); they build real parts
(a generated CRM on disk, a real MLflow SQLite store), never fakes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from leadscore.config import Settings, load_settings
from leadscore.env import set_offline_env

set_offline_env()

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def settings() -> Settings:
    """The repository's default configuration."""
    return load_settings(REPO_ROOT / "configs")


@pytest.fixture(scope="session", autouse=True)
def _private_mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every test session gets its own MLflow SQLite store and artifact root."""
    root = tmp_path_factory.mktemp("mlflow")
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlruns.db'}"
    os.environ["LEADSCORE_MLFLOW_ARTIFACTS"] = str(root / "artifacts")
    yield root
    if old is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = old
