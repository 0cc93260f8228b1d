"""``leadscore serve``: run the BentoML scoring service (a ``bentoml serve`` child process).

A child process rather than an in-process server because BentoML manages its own worker processes
and signal handling; we only translate our options into the environment the service reads
(see :mod:`serving.service`). Heavy imports stay inside the command so ``leadscore --help`` is fast.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from leadscore.cli_context import err_console, settings_from, state_from
from leadscore.env import OFFLINE_ENV

if TYPE_CHECKING:
    from leadscore.config import Settings


def service_env(
    config_dir: Path | None,
    overrides: list[str],
    model: str | None,
    bundle: Path | None,
    store: str | None,
    workers: int | None,
    tracking_uri: str | None,
) -> dict[str, str]:
    """The environment of the server process: our choices plus the telemetry opt-outs."""
    env = dict(os.environ)
    env.update(OFFLINE_ENV)
    if config_dir is not None:
        env["LEADSCORE_CONFIG_DIR"] = str(config_dir.resolve())
    if overrides:
        env["LEADSCORE_OVERRIDES"] = json.dumps(overrides)
    if bundle is not None:
        env["LEADSCORE_BUNDLE"] = str(bundle.resolve())
    if model is not None:
        env["LEADSCORE_MODEL_URI"] = model
    if store is not None:
        env["LEADSCORE_EVENT_STORE"] = store
    if workers is not None:
        env["LEADSCORE_WORKERS"] = str(workers)
    if tracking_uri is not None:
        env.setdefault("MLFLOW_TRACKING_URI", tracking_uri)
    return env


def bentoml_command(host: str, port: int) -> list[str]:
    bentoml_bin = Path(sys.executable).with_name("bentoml")
    exe = [str(bentoml_bin)] if bentoml_bin.exists() else [sys.executable, "-m", "bentoml"]
    return [*exe, "serve", "leadscore.serving.service:LeadScoreService", "--host", host, "--port", str(port)]


def run_forwarding_signals(cmd: list[str], env: dict[str, str]) -> int:
    """Run the server; SIGTERM/SIGINT sent to ``leadscore serve`` stop it too (no orphaned server).

    A ``kill -9`` cannot be forwarded, so the server also gets SIGTERM from the kernel when this
    process dies (:func:`~leadscore.serving.runtime.die_with_parent`), and each worker likewise when
    the server dies (:class:`~leadscore.serving.service.LeadScoreService`): nothing is left listening.
    """
    from leadscore.serving.runtime import die_with_parent

    me = os.getpid()
    proc = subprocess.Popen(cmd, env=env, preexec_fn=lambda: die_with_parent(signal.SIGTERM, me))

    def forward(signum: int, _frame: object) -> None:
        if proc.poll() is None:
            proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            try:
                return proc.wait()
            except KeyboardInterrupt:  # Ctrl-C reached us and (same terminal) the server: wait for it
                continue
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def check_store(store_url: str) -> None:
    """Open (and migrate) the store and read it through once, before any worker starts: a store that
    cannot be used stops ``leadscore serve`` with one line naming the file and the reason (a
    :class:`~leadscore.errors.StoreError`), instead of workers crash-looping behind a hanging port."""
    from leadscore.serving.store import EventStore

    es = EventStore(store_url)
    try:
        es.verify()
    finally:
        es.close()


def check_model(settings: Settings, model: str | None, bundle: Path | None, tracking_uri: str) -> str:
    """Load and bind the model the workers will serve, before any worker starts: a missing model, an
    unreachable registry or a bundle of another feature schema stops ``leadscore serve`` with one line
    (a :class:`~leadscore.errors.ModelError`, exit 2). BentoML retries a worker that fails to start and
    exits 0, so left to the workers the fault would be a hanging port and a log full of tracebacks.
    Returns the version that will be served."""
    from leadscore.serving.scoring import Scorer

    os.environ.setdefault("MLFLOW_TRACKING_URI", tracking_uri)
    scorer = Scorer.load(settings, model_uri=model, bundle_dir=bundle)
    return str(scorer.version)


def import_history(history: Path, settings: Settings, store_url: str) -> dict[str, int]:
    """Load a CRM history directory into the event store (idempotent); user-fixable failures are
    :class:`~leadscore.errors.LeadscoreError` so the command stops with one line."""
    from sqlalchemy.exc import SQLAlchemyError

    from leadscore.errors import DataError, StoreError
    from leadscore.history import load_history
    from leadscore.serving.store import EventStore

    crm, report = load_history(history, settings)
    if not report.usable:
        raise DataError(f"{history} is not usable; run `leadscore validate {history}`")
    try:
        es = EventStore(store_url)
        try:
            return dict(es.import_history(crm))
        finally:
            es.close()
    except SQLAlchemyError as exc:
        raise StoreError(f"event store {store_url}: {exc}") from exc


def register(app: typer.Typer) -> None:
    """Add the serving commands to the main app."""

    @app.command()
    def serve(
        ctx: typer.Context,
        port: Annotated[int | None, typer.Option(help="Port (default: serving.port).")] = None,
        host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
        model: Annotated[
            str | None, typer.Option(help="Registry model URI (default: serving.model_uri, e.g. models:/leadscore@champion).")
        ] = None,
        bundle: Annotated[
            Path | None, typer.Option(help="Serve a bundle directory instead of the registry.", exists=True, file_okay=False)
        ] = None,
        store: Annotated[
            str | None, typer.Option(help="Event store SQLAlchemy URL (default: serving.event_store_url / paths).")
        ] = None,
        history: Annotated[
            Path | None,
            typer.Option(help="Import this CRM history directory into the event store first (idempotent).",
                         exists=True, file_okay=False),
        ] = None,
        workers: Annotated[int | None, typer.Option(min=1, help="Worker processes (default: serving.workers).")] = None,
    ) -> None:
        """Run the scoring API (POST /activities, /score, GET /leads/{id}, /v1/batch, /webhooks/hubspot)."""
        from leadscore.serving.runtime import event_store_url

        state = state_from(ctx)
        settings = settings_from(ctx)
        store_url = store or event_store_url(settings)
        check_store(store_url)
        version = check_model(settings, model, bundle, settings.paths.mlflow_tracking_uri)
        err_console.print(f"model {bundle or model or settings.serving.model_uri}: version {version}")
        if history is not None:
            counts = import_history(history, settings, store_url)
            err_console.print(f"imported into {store_url}: {counts}")
        env = service_env(
            state.config_dir, state.overrides, model, bundle, store_url, workers or settings.serving.workers,
            settings.paths.mlflow_tracking_uri,
        )
        cmd = bentoml_command(host, port or settings.serving.port)
        err_console.print(f"starting: {' '.join(cmd)}")
        raise typer.Exit(run_forwarding_signals(cmd, env))
