"""One small trained bundle per test session for the in-process API tests, and their state.

Training takes tens of seconds even on a tiny generated CRM, so every in-process API module
(``test_api_inprocess``, ``test_api_hardening``, ``test_api_fuzz``) shares one bundle: the first
module that asks trains it under the session's temporary directory, the others reuse it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from leadscore.config import Settings, load_settings
from leadscore.serving.scoring import Scorer
from leadscore.serving.state import ServingState
from leadscore.serving.store import EventStore
from tests.conftest import REPO_ROOT
from tests.test_serving import TRAIN_OVERRIDES

API_KEY = "inprocess-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
HUBSPOT_SECRET = "inprocess-hubspot-secret"
SEGMENT_KEY = "inprocess-write-key"


_bundles: dict[Path, Path] = {}


def trained_bundle(tmp_path_factory: pytest.TempPathFactory, settings: Settings) -> Path:
    """A small model trained by the real pipeline on a generated CRM (a real model, not a good one)."""
    from leadscore.generate import generate_crm
    from leadscore.training.train import train

    base = tmp_path_factory.getbasetemp()
    if base not in _bundles:
        root = tmp_path_factory.mktemp("inprocess")
        generate_crm(root / "crm", n_leads=1200, months=9, seed=3, settings=settings)
        train(root / "crm", load_settings(REPO_ROOT / "configs", TRAIN_OVERRIDES), trials=1,
              out_dir=root / "trained")
        _bundles[base] = root / "trained" / "bundle"
    return _bundles[base]


def make_state(settings: Settings, bundle_dir: Path, db: Path, *, hubspot: bool = False,
               segment: bool = False) -> ServingState:
    """A serving state on a fresh SQLite store; the caller closes ``state.store``."""
    store = EventStore(f"sqlite:///{db}")
    return ServingState(settings=settings, scorer=Scorer.load(settings, bundle_dir=bundle_dir), store=store,
                        api_keys=[API_KEY], segment_keys=[SEGMENT_KEY] if segment else [],
                        hubspot_secret=HUBSPOT_SECRET if hubspot else None)
