"""The in-process API tests' serving state and credentials.

Every in-process API module (``test_api_inprocess``, ``test_api_hardening``, ``test_api_fuzz``) scores with
the session's one small model (``small_model`` in ``conftest.py``).
"""

from __future__ import annotations

from pathlib import Path

from leadscore.config import Settings
from leadscore.serving.scoring import Scorer
from leadscore.serving.state import ServingState
from leadscore.serving.store import EventStore

API_KEY = "inprocess-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
HUBSPOT_SECRET = "inprocess-hubspot-secret"
SEGMENT_KEY = "inprocess-write-key"


def make_state(settings: Settings, bundle_dir: Path, db: Path, *, hubspot: bool = False,
               segment: bool = False) -> ServingState:
    """A serving state on a fresh SQLite store; the caller closes ``state.store``."""
    store = EventStore(f"sqlite:///{db}")
    return ServingState(settings=settings, scorer=Scorer.load(settings, bundle_dir=bundle_dir), store=store,
                        api_keys=[API_KEY], segment_keys=[SEGMENT_KEY] if segment else [],
                        hubspot_secret=HUBSPOT_SECRET if hubspot else None)
