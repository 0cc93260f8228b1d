"""Training commands: ``leadscore train``, ``leadscore promote``, ``leadscore rollback``.

Heavy libraries (pandas, LightGBM, MLflow) are imported inside the command bodies so ``leadscore
--help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from leadscore.cli_context import console, err_console, settings_from

if TYPE_CHECKING:
    from rich.console import Console

    from leadscore.training.promote import PromotionDecision
    from leadscore.training.train import TrainResult

_SHOWN = ("roc_auc", "pr_auc", "log_loss", "brier", "ece", "top_decile_lift", "recall_at_capacity")
_MODELS = ("shipped", "lightgbm", "lightgbm_uncalibrated", "logistic", "rule", "ground_truth")


def print_results(result: TrainResult, console: Console, *, flat: bool = False) -> None:
    """The backtest table (every model on every metric of the test months, 95% CIs), what was shipped,
    the top drifting features and the verdict; a promotion is suggested only for an event-log model that
    beats the rule score (a flat model cannot be promoted)."""
    from rich.markup import escape
    from rich.table import Table

    from leadscore.training.drift import describe_top

    for target, tr in result.targets.items():
        shipped = tr.shipped_choice
        kind = shipped.kind + (f" {shipped.blend_weight:g}" if shipped.blend_weight is not None else "")
        table = Table(title=f"{target}: backtest of the procedure on test months {', '.join(tr.split.months('test'))} "
                            f"({tr.rows['test']:,} moments, {tr.positives['test']:,} positives; "
                            f"shipped: {kind}, calibration: {tr.shipped.calibrator.method}; "
                            f"{tr.recency.chosen.label})")
        table.add_column("model")
        for m in _SHOWN:
            table.add_column(m, justify="right")
        for model in _MODELS:
            if model not in tr.metrics:
                continue
            ms = tr.metrics[model]
            table.add_row(model, *[f"{ms[m].value:.3f}\n[dim][{ms[m].lo:.3f}, {ms[m].hi:.3f}][/dim]" for m in _SHOWN])
        console.print(table)
        if "shipped" in tr.population:  # the table's figures are the sample's (training.artifacts.summary)
            pop = tr.population["shipped"]
            console.print(f"  shipped over every eligible test moment (weighted by moment_weight): AUC "
                          f"{pop['roc_auc']:.3f}, log loss {pop['log_loss']:.3f}, ECE {pop['ece']:.3f}; the table: the "
                          "sampled moments")
        lift = tr.metrics["shipped"]["roc_auc"].value - tr.metrics["rule"]["roc_auc"].value
        line = f"  AUC gain of the shipped model over the rule score: {lift:+.3f}"
        if tr.share_of_ceiling_lift is not None:
            line += f"; share of ceiling lift: {tr.share_of_ceiling_lift:.3f}"
        console.print(line)
        if tr.refit is not None:
            months = tr.refit.window()
            cal = months["calibration_months"]
            how = ("calibrated out of fold on those months" if months["scheme"] == "cross_fit"
                   else f"calibrated on {cal[0]}..{cal[-1]}" if cal else "not recalibrated")
            console.print(f"  registered model: refit on {months['fit_months'][0]}..{months['fit_months'][-1]}, {how}")
    if result.drift:
        k = result.bundle.info.get("drift_top_features", 5)
        console.print(f"drift of the test months against the training rows (PSI): {escape(describe_top(result.drift, k))}")
    good = all(ok for ok, _ in result.verdicts.values())
    for ok, text in result.verdicts.values():
        console.print(f"[{'green' if ok else 'yellow'}]{escape(text)}[/]")
    if result.model_version:
        line = f"[green]registered[/green] model version {result.model_version} as 'challenger' (run {result.run_id})"
        window = result.bundle.window
        if good and not flat and window is not None:
            end = window["sql"].get("fitted_end", window["sql"]["test_start"])[:10]
            line += f"; next, once a month after {end} has matured: leadscore promote --crm DIR"
        console.print(line)


def write_summary(result: TrainResult, path: Path) -> None:
    """``--summary FILE``: the test-month figures, drift and verdict as JSON (training.artifacts.summary)."""
    import json

    from leadscore.training.artifacts import summary

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary(result), indent=1))


def print_decision(decision: PromotionDecision, console: Console) -> None:
    from rich.table import Table

    colour = "green" if decision.promoted or decision.action == "rollback" else "yellow"
    console.print(f"[{colour}]{decision.reason}[/{colour}]")
    if decision.numbers:
        table = Table(title=f"evaluation month {decision.month}")
        table.add_column("number")
        table.add_column("value", justify="right")
        for k, v in decision.numbers.items():
            table.add_row(k, f"{v:.4f}" if abs(v) < 1000 else f"{v:,.0f}")
        console.print(table)


def _progress_display(console: Console, trials: int) -> tuple[Any, Any]:
    """A rich progress display fed by the training pipeline's progress events."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=console, transient=False)
    phase = progress.add_task("starting", total=None)
    tasks: dict[str, Any] = {}
    best: dict[str, float] = {}

    def on_event(event: str, payload: Any) -> None:
        if event == "phase":
            progress.update(phase, description=str(payload))
        elif event == "trial":
            target, rec = payload
            if target not in tasks:
                tasks[target] = progress.add_task(f"{target} trials", total=trials)
            if rec["value"] is not None and rec["state"] == "complete":
                best[target] = min(best.get(target, float("inf")), rec["value"])
            desc = f"{target} trials (best val log loss {best[target]:.4f})" if target in best else f"{target} trials"
            progress.update(tasks[target], advance=1, description=desc)

    return progress, on_event


def register(app: typer.Typer) -> None:
    """Add the training commands to the main app."""

    @app.command()
    def train(
        ctx: typer.Context,
        crm: Annotated[str | None, typer.Option(help="CRM history: a directory (five tables, Parquet or CSV) or a database URL.")] = None,
        cutoff: Annotated[str | None, typer.Option(help="Data cut-off (UTC); default: manifest.json, else now.")] = None,
        trials: Annotated[int | None, typer.Option(min=1, help="Optuna trials per target (default: config).")] = None,
        timeout: Annotated[float | None, typer.Option(help="Optuna time budget per target, seconds.")] = None,
        out: Annotated[Path | None, typer.Option(help="Also keep the bundle and artifacts in this directory.")] = None,
        flat: Annotated[Path | None, typer.Option(help="Train from a flat one-row-per-lead file instead.")] = None,
        mapping: Annotated[Path | None, typer.Option(help="Column mapping (YAML) for --flat.")] = None,
        summary: Annotated[Path | None, typer.Option(help="Write the test-month figures and drift as JSON here.")] = None,
        engine: Annotated[str, typer.Option(help="Build the moments with local (this process) or dask (a Dask "
                                                 "cluster, part by part); the models train here either way.")] = "local",
        scheduler: Annotated[str | None, typer.Option(help="With --engine dask: the scheduler's address "
                                                      "(default: a LocalCluster on this machine).")] = None,
    ) -> None:
        """Monthly retrain: tune, calibrate, backtest against baselines, log to MLflow, register a challenger."""
        # InsufficientDataError (exit 3), MappingError, LeakageError, HistoryError (exit 2) are
        # LeadscoreErrors: the root command group prints them as one line.
        settings = settings_from(ctx)
        from leadscore.features.cli import checked_engine

        engine_client = checked_engine(engine, scheduler)
        if flat is not None or mapping is not None:
            if engine != "local":
                raise typer.BadParameter("--flat trains on this machine only", param_hint="--engine")
            if flat is None or mapping is None:
                err_console.print("[red]error:[/red] --flat and --mapping go together")
                raise typer.Exit(2)
            from leadscore.training.flat import train_flat

            flat_result = train_flat(flat, mapping, settings, trials, timeout, out_dir=out)
            print_results(flat_result, console, flat=True)
            if summary is not None:
                write_summary(flat_result, summary)
            return
        if crm is None:
            err_console.print("[red]error:[/red] give --crm DIR (or --flat FILE --mapping FILE)")
            raise typer.Exit(2)
        from leadscore.training.train import train as run_train

        n_trials = trials or settings.training.trials
        progress, on_event = _progress_display(console, n_trials)
        with engine_client(engine, scheduler) as client, progress:
            result = run_train(crm, settings, cutoff, trials=trials, timeout=timeout, progress=on_event, out_dir=out,
                               client=client)
        print_results(result, console)
        if summary is not None:
            write_summary(result, summary)

    @app.command()
    def promote(
        ctx: typer.Context,
        crm: Annotated[str | None, typer.Option(help="CRM history (directory or database URL) with the months after "
                                                     "the models' fitting periods.")] = None,
        cutoff: Annotated[str | None, typer.Option(help="Data cut-off (UTC); default: manifest.json, else now.")] = None,
        flat: Annotated[Path | None, typer.Option(help="A flat table with months after the flat models' fitting "
                                                      "periods: promote leadscore-flat-<mapping name>.")] = None,
        mapping: Annotated[Path | None, typer.Option(help="The flat table's mapping YAML (with --flat).")] = None,
    ) -> None:
        """Promote the challenger to champion if it passes the gate on the latest matured unseen month."""
        from leadscore.training.promote import promote as run_promote
        from leadscore.training.promote import promote_flat

        if flat is not None and mapping is not None:
            decision = promote_flat(settings_from(ctx), flat, mapping)
        elif crm is not None and flat is None and mapping is None:
            decision = run_promote(settings_from(ctx), crm, cutoff=cutoff)
        else:
            err_console.print("[red]error:[/red] give --crm DIR, or --flat FILE --mapping FILE")
            raise typer.Exit(2)
        print_decision(decision, console)
        if not decision.promoted:
            raise typer.Exit(1)

    @app.command()
    def rollback(ctx: typer.Context) -> None:
        """Restore the previous champion."""
        from leadscore.training.promote import rollback as run_rollback

        print_decision(run_rollback(settings_from(ctx)), console)
