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
from typing import Annotated

import typer

from leadscore.env import OFFLINE_ENV


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
    """Run the server; SIGTERM/SIGINT sent to ``leadscore serve`` stop it too (no orphaned server)."""
    proc = subprocess.Popen(cmd, env=env)

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
        from leadscore.cli import State, err_console, settings_from

        settings = settings_from(ctx)
        state = ctx.find_root().obj
        assert isinstance(state, State)
        from leadscore.serving.runtime import event_store_url

        store_url = store or event_store_url(settings)
        if history is not None:
            from leadscore.history import HistoryError, load_history
            from leadscore.serving.store import EventStore

            try:
                crm, report = load_history(history, settings)
            except HistoryError as exc:
                err_console.print(f"[red]error:[/red] {exc}")
                raise typer.Exit(2) from exc
            if not report.usable:
                err_console.print(f"[red]error:[/red] {history} is not usable; run `leadscore validate {history}`")
                raise typer.Exit(2)
            es = EventStore(store_url)
            counts = es.import_history(crm)
            es.close()
            err_console.print(f"imported into {store_url}: {counts}")
        env = service_env(
            state.config_dir, state.overrides, model, bundle, store_url, workers or settings.serving.workers,
            settings.paths.mlflow_tracking_uri,
        )
        cmd = bentoml_command(host, port or settings.serving.port)
        err_console.print(f"starting: {' '.join(cmd)}")
        raise typer.Exit(run_forwarding_signals(cmd, env))
