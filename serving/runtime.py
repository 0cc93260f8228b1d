"""How the server process finds its settings and event store: from the environment.

``leadscore serve`` and tests set these variables for the ``bentoml serve`` child; a bento run by hand
reads the same ones. Kept free of heavy imports so the CLI can use it.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys

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


#: ``prctl(2)`` option: the signal this process gets when the thread that forked it exits
_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM, expected_parent: int | None = None) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent dies; returns whether it is armed.

    Why: ``kill -9`` gives a parent no chance to stop its children, and BentoML's process manager
    (circus) starts each worker in a session of its own, so even a kill of the whole process group
    leaves the worker re-parented to init, still holding the listening socket and writing to the
    store. With the death signal the kernel stops the child itself. SIGTERM rather than SIGKILL: a
    worker finishes the requests it has already accepted (their writes commit or roll back whole
    either way). If the parent already died before the call (``expected_parent`` given and no
    longer our parent), the signal is raised at once. A no-op (False) on other systems.
    """
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return False
    if expected_parent is not None and os.getppid() != expected_parent:
        os.kill(os.getpid(), sig)
    return True


def freeze_startup_heap() -> None:
    """Collect once, then move every object alive after start-up out of the collector's reach.

    A worker starts with ~400k tracked objects (the model's trees, the feature plan, the activity
    cache, the imported libraries) that live as long as the process. Each full collection walked all
    of them: ~200 ms pauses on a busy machine, landing on whichever request was running. Frozen
    (``gc.freeze``), a full collection walks only what requests created since. Called once, after
    the model is loaded, the cache warmed and the app built.
    """
    import gc

    gc.collect()
    gc.freeze()
