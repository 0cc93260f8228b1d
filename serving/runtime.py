"""How the server process finds its settings and event store: from the environment.

``leadscore serve`` and tests set these variables for the ``bentoml serve`` child; a bento run by hand
reads the same ones. Kept free of heavy imports so the CLI can use it.
"""

from __future__ import annotations

import json
import os

from leadscore.config import ConfigError, Settings, load_settings

EVENT_STORE_ENV = "LEADSCORE_EVENT_STORE"
OVERRIDES_ENV = "LEADSCORE_OVERRIDES"


def event_store_url(settings: Settings) -> str:
    """``$LEADSCORE_EVENT_STORE``, else ``serving.event_store_url``, else ``paths.event_store_url``."""
    return os.environ.get(EVENT_STORE_ENV) or settings.serving.event_store_url or settings.paths.event_store_url


def settings_from_env() -> Settings:
    """``$LEADSCORE_CONFIG_DIR`` (or ./configs) plus the ``--set`` overrides passed as JSON."""
    raw = os.environ.get(OVERRIDES_ENV, "[]")
    try:
        overrides = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{OVERRIDES_ENV} is not a JSON list of key=value strings: {raw!r}") from exc
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise ConfigError(f"{OVERRIDES_ENV} must be a JSON list of key=value strings")
    return load_settings(None, overrides)
