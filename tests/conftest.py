"""Shared test setup: offline tools, a private MLflow store, and small generated CRMs.

Fixtures here are shared by every tier (features, training, SLA, serving); they build real parts
(a generated CRM on disk, a real MLflow SQLite store), never fakes.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from leadscore.config import Settings, load_settings
from leadscore.env import set_offline_env
from tests.pg_support import postgres, store_url  # noqa: F401  (PostgreSQL fixtures: the server, a store URL per backend)

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


#: a small CRM cannot fill the default months of splits; the tests that need a model need a real one, not a good one
TRAIN_OVERRIDES = (
    "training.minimums.min_moments=200",
    "training.minimums.min_positives=20",
    "training.bootstrap_samples=20",
    "training.split.test_months=1",
    "training.split.calibration_months=1",
    "training.split.validation_months=1",
    "training.split.min_train_months=2",
    # these tests promote at the cut-off they trained at; a refit model saw every matured month, so
    # promoting it needs a later month (tests/test_refit.py exercises the refit)
    "training.refit=none",
)


@dataclass(frozen=True)
class SmallModel:
    """One model trained and registered by ``leadscore train``'s own code, shared by the session."""

    crm_dir: Path
    #: the settings it was trained under (the defaults plus :data:`TRAIN_OVERRIDES`)
    settings: Settings
    bundle_dir: Path
    #: its version under ``settings.training.registered_model_name`` (no alias is set here)
    version: str
    run_id: str
    #: what training emitted: ``Category: message`` warnings and MLflow log lines
    warnings: tuple[str, ...]
    logs: tuple[str, ...]


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="session")
def small_model(tmp_path_factory: pytest.TempPathFactory, _private_mlflow: Path) -> SmallModel:
    """A 1,200-lead, 9-month generated CRM and the model trained on it (1 trial): trained once per session
    for every test that needs a model (in-process API, real server, the MLflow model), not once per file."""
    from leadscore.generate import generate_crm
    from leadscore.training.train import train

    root = tmp_path_factory.mktemp("small-model")
    train_settings = load_settings(REPO_ROOT / "configs", list(TRAIN_OVERRIDES))
    generate_crm(root / "crm", n_leads=1200, months=9, seed=3, settings=train_settings)
    handler = _Collect()
    logging.getLogger("mlflow").addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = train(root / "crm", train_settings, trials=1, out_dir=root / "trained")
    finally:
        logging.getLogger("mlflow").removeHandler(handler)
    assert result.model_version is not None and result.run_id is not None
    return SmallModel(root / "crm", train_settings, root / "trained" / "bundle", str(result.model_version),
                      result.run_id, tuple(f"{w.category.__name__}: {w.message}" for w in caught),
                      tuple(handler.messages))
