"""The ``leadscore`` command line: a thin Typer layer over plain functions.

Global options (``--config``, ``--set``) come before the command and build the one typed config
tree that every command receives explicitly. Each package registers its own commands; their
modules import heavy libraries inside the command bodies so that ``leadscore --help`` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from leadscore.config import ConfigError, Settings, load_settings
from leadscore.env import set_offline_env

console = Console()
err_console = Console(stderr=True)

app = typer.Typer(
    name="leadscore",
    help="ML lead scoring and qualification: generate or import CRM history, build point-in-time "
    "features, train calibrated models, set SLA stages, serve scores.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


class State:
    """What the global options decided; commands ask it for the settings."""

    def __init__(self, config_dir: Path | None, overrides: list[str]) -> None:
        self.config_dir = config_dir
        self.overrides = overrides
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = load_settings(self.config_dir, self.overrides)
            except ConfigError as exc:
                err_console.print(f"[red]config error:[/red] {exc}")
                raise typer.Exit(2) from exc
        return self._settings


def settings_from(ctx: typer.Context) -> Settings:
    """The settings of this invocation (loaded once, on first use)."""
    root = ctx.find_root()
    state = root.obj if isinstance(root.obj, State) else State(None, [])
    root.obj = state
    return state.settings


@app.callback()
def main(
    ctx: typer.Context,
    config: Annotated[
        Path | None, typer.Option("--config", help="Config directory (default: ./configs or $LEADSCORE_CONFIG_DIR).")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a config key, e.g. --set training.trials=5 (repeatable)."),
    ] = None,
) -> None:
    """Global options shared by every command."""
    set_offline_env()
    ctx.obj = State(config, list(set_ or []))


@app.command()
def generate(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="Directory to write the CRM tables into.")],
    leads: Annotated[int, typer.Option(min=10, help="Number of leads.")] = 5000,
    months: Annotated[int, typer.Option(min=1, max=120, help="Months of history.")] = 12,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same files.")] = 0,
    end: Annotated[str, typer.Option(help="Data cut-off (UTC date); history ends here.")] = "2026-11-01",
) -> None:
    """Write a realistic generated B2B CRM history, with the ground truth it knows."""
    from leadscore.generate import generate_crm

    summary = generate_crm(out, n_leads=leads, months=months, seed=seed, settings=settings_from(ctx), end=end)
    table = Table(title=f"Generated CRM in {out}")
    table.add_column("what")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        table.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value))
    console.print(table)


@app.command()
def validate(
    ctx: typer.Context,
    directory: Annotated[str, typer.Argument(help="The five CRM tables: a directory (Parquet or CSV) or a database URL.")],
    cutoff: Annotated[str | None, typer.Option(help="Data cut-off (default: manifest.json, else now).")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the report as JSON here.")] = None,
) -> None:
    """Validate CRM history: counts per table and reason; rejected rows go to DIR/_rejected/."""
    from leadscore.history import HistoryError, load_history

    try:
        _, report = load_history(directory, settings_from(ctx), cutoff=cutoff)
    except HistoryError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    print_validation_report(report)
    if json_out:
        json_out.write_text(json.dumps(report.to_dict(), indent=2))
    if not report.usable:
        raise typer.Exit(1)


def print_validation_report(report: object) -> None:
    """Render a :class:`~leadscore.history.ValidationReport` as tables."""
    from leadscore.history import ValidationReport

    assert isinstance(report, ValidationReport)
    table = Table(title=f"CRM history (cut-off {report.cutoff.isoformat()})")
    for col in ("table", "input", "valid", "rejected", "status"):
        table.add_column(col, justify="right" if col in ("input", "valid", "rejected") else "left")
    for name, t in report.tables.items():
        status = f"[red]unusable: {t.unusable}[/red]" if t.unusable else "[green]ok[/green]"
        table.add_row(name, str(t.input_rows), str(t.valid_rows), str(t.rejected_rows), status)
    console.print(table)
    rows = [(n, r, c, t.examples.get(r, [])) for n, t in report.tables.items() for r, c in t.reasons.items()]
    if rows:
        reasons = Table(title="Rejected rows by reason (written to _rejected/<table>.parquet)")
        for col in ("table", "reason", "rows", "examples"):
            reasons.add_column(col)
        for name, reason, count, examples in rows:
            reasons.add_row(name, reason, str(count), "; ".join(examples))
        console.print(reasons)
    for name, t in report.tables.items():
        for note in t.notes:
            console.print(f"[yellow]{name}:[/yellow] {note}")


def _register_subcommands() -> None:
    """Mount the commands each package owns (their modules keep heavy imports inside commands)."""
    from leadscore.features.cli import app as features_app
    from leadscore.importers.cli import app as import_app
    from leadscore.serving.cli import register as register_serving
    from leadscore.training.cli import register as register_training
    from leadscore.training.eval_cli import register as register_evaluation
    from leadscore.training.sla_cli import register as register_sla

    app.add_typer(features_app, name="features", help="Point-in-time features, rule score and labels.")
    app.add_typer(import_app, name="import", help="Import CRM exports (HubSpot, Salesforce) as CRM tables.")
    register_training(app)
    register_sla(app)
    register_evaluation(app)
    register_serving(app)


_register_subcommands()
