"""The BentoML service: ``bentoml serve leadscore.serving.service:LeadScoreService``.

Configured from the environment, so the same class runs under ``leadscore serve``, a plain
``bentoml serve`` and a built bento:

- ``LEADSCORE_CONFIG_DIR``: config directory (default ``./configs``);
- ``LEADSCORE_BUNDLE``: serve this bundle directory, else ``LEADSCORE_MODEL_URI`` / ``serving.model_uri``
  from the MLflow registry (``MLFLOW_TRACKING_URI`` / ``paths.mlflow_tracking_uri``);
- ``LEADSCORE_EVENT_STORE``: SQLAlchemy URL of the event store (default ``paths.event_store_url``);
- ``LEADSCORE_API_KEYS``, ``LEADSCORE_SEGMENT_WRITE_KEYS``, ``LEADSCORE_HUBSPOT_CLIENT_SECRET``: secrets.

The model is loaded once per worker in ``__init__``; BentoML's ``/readyz`` turns ready only after
that, and our ``/ready`` also reports the pinned model version.
"""

from __future__ import annotations

import logging
import os
import signal

from leadscore.env import set_offline_env

set_offline_env()
# One request scores one row: OpenMP fanning a single LightGBM prediction out over all cores costs
# ~20 ms of thread wake-ups on a busy machine against ~0.05 ms on one thread. Throughput comes from
# concurrent requests (threads, workers), not from parallelism inside one. Set before LightGBM loads.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from typing import TYPE_CHECKING, Any, NoReturn  # noqa: E402

import bentoml  # noqa: E402

from leadscore.serving.gate import OpsGate  # noqa: E402

if TYPE_CHECKING:
    from leadscore.errors import LeadscoreError
    from leadscore.serving.state import ServingState

log = logging.getLogger("leadscore.serving")


def build_state() -> ServingState:
    """Load settings, model and event store from the environment (what every worker does at start)."""
    from leadscore.serving.runtime import event_store_url, settings_from_env
    from leadscore.serving.scoring import Scorer
    from leadscore.serving.state import ServingState
    from leadscore.serving.store import EventStore

    settings = settings_from_env()
    scorer = Scorer.load(settings)
    store = EventStore(event_store_url(settings), cache_rows=settings.serving.history_cache_rows,
                       checkpoint_seconds=settings.serving.wal_checkpoint_seconds,
                       account_window_days=settings.features.account_window_days)
    state = ServingState.from_env(settings, scorer, store)
    cached = store.warm_cache()
    state.warm_up()
    if not state.api_keys:
        log.warning("no API key configured (%s): every authenticated endpoint answers 401",
                    settings.serving.api_keys_env)
    log.info("serving model %s (%s), event store %s (%d activities cached)", scorer.version, scorer.source,
             store.engine.url.render_as_string(hide_password=True), cached)
    return state


def refuse_to_start(exc: LeadscoreError) -> NoReturn:
    """A worker that cannot serve (store unusable, model missing) stops the whole server, with one line.

    Left to itself the process manager restarts a failing worker every few seconds forever, logging a
    long traceback each time while the port accepts connections nobody answers. The cause is the
    user's to fix, so the worker logs the message alone, asks its supervisor (the ``bentoml serve``
    process) to shut down and exits with the error's status. ``leadscore serve`` checks the store
    before it starts any worker; this covers a plain ``bentoml serve`` and a bento.
    """
    from bentoml._internal.context import server_context

    log.error("%s: %s", exc.label, exc)
    if server_context.worker_index is not None:  # started by BentoML's supervisor: stop it too
        os.kill(os.getppid(), signal.SIGTERM)
    os._exit(exc.exit_code)


class WorkerApp:
    """The ASGI app BentoML mounts when the class is defined, before any model is loaded.

    BentoML mounts apps at import time, but a worker's :class:`ServingState` exists only once its
    ``__init__`` has loaded the model. So the mount is this small dispatcher, and each worker's
    service plugs in the app :func:`~leadscore.serving.app.create_app` built for its own state.
    Until then every request gets 503, as readiness does.
    """

    def __init__(self) -> None:
        self.app: Any = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self.app is not None:
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":
            return
        from leadscore.serving.http import error_response

        response = error_response(503, "the service is starting: model not loaded yet")
        await response(scope, receive, send)


worker_app = WorkerApp()


@bentoml.service(
    name="leadscore",
    traffic={"timeout": 30},
    workers=int(os.environ.get("LEADSCORE_WORKERS", "1")),
    envs=[{"name": k, "value": "true"} for k in ("BENTOML_DO_NOT_TRACK", "MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK")],
)
@bentoml.asgi_app(worker_app, path="/")
class LeadScoreService:
    """Lead scores on every CRM activity: event store, online features, calibrated model, SLA stages."""

    def __init__(self) -> None:
        from leadscore.errors import LeadscoreError
        from leadscore.serving.app import create_app
        from leadscore.serving.runtime import die_with_parent, freeze_startup_heap

        die_with_parent(signal.SIGTERM)
        try:
            self.state = build_state()
        except LeadscoreError as exc:
            refuse_to_start(exc)
        worker_app.app = create_app(self.state)
        freeze_startup_heap()
        self.state.start_stale_worker()  # the mounted app gets no lifespan events under BentoML

    @bentoml.on_shutdown
    def close(self) -> None:
        self.state.stop_stale_worker()
        self.state.store.close()


# /metrics and BentoML's API pages need an API key unless serving.open_metrics / open_docs (serving/gate.py)
LeadScoreService.add_asgi_middleware(  # type: ignore[attr-defined]
    OpsGate, state=lambda: worker_app.app.state.leadscore if worker_app.app is not None else None)
