"""Offline-by-default process settings.

The tools we use phone home unless told not to; leadscore runs on machines without network access,
so every entry point calls :func:`set_offline_env` before it imports MLflow or BentoML.
BentoML only accepts the literal word ``true``.
"""

from __future__ import annotations

import os

OFFLINE_ENV = {
    "BENTOML_DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
}


def set_offline_env() -> None:
    """Set the telemetry opt-outs unless the caller already chose a value."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
