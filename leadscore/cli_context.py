"""What every ``leadscore`` command shares: the invocation state, the consoles, the error boundary.

Sub-command modules (``features``, ``import``, ``train``, ``serve``, ...) import this module, never
``leadscore.cli``, which imports them to mount their commands: so the import graph has no cycle and a
sub-CLI can be imported (and tested) on its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from leadscore.errors import LeadscoreError, NotEnoughDataError

if TYPE_CHECKING:
    from leadscore.config import Settings

console = Console()
err_console = Console(stderr=True)


class State:
    """What the global options decided; commands ask it for the settings."""

    def __init__(self, config_dir: Path | None, overrides: list[str]) -> None:
        self.config_dir = config_dir
        self.overrides = overrides
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        """Loaded on first use, so ``--help`` and commands that need no config never read the YAML.

        A :class:`~leadscore.errors.ConfigError` propagates to :class:`ErrorBoundaryGroup`.
        """
        if self._settings is None:
            from leadscore.config import load_settings

            self._settings = load_settings(self.config_dir, self.overrides)
        return self._settings


def state_from(ctx: typer.Context) -> State:
    """The :class:`State` of this invocation (a default one when a command runs without the root)."""
    root = ctx.find_root()
    if not isinstance(root.obj, State):
        root.obj = State(None, [])
    return root.obj


def settings_from(ctx: typer.Context) -> Settings:
    """The settings of this invocation (loaded once, on first use)."""
    return state_from(ctx).settings


def report_error(exc: LeadscoreError) -> int:
    """Print a user-caused error as one line on stderr; return the exit status it calls for."""
    colour = "yellow" if isinstance(exc, NotEnoughDataError) else "red"
    err_console.print(f"[{colour}]{escape(exc.label)}:[/{colour}] {escape(str(exc))}", soft_wrap=True)  # one line, never wrapped
    return exc.exit_code


class ErrorBoundaryGroup(TyperGroup):
    """The root command group: a :class:`~leadscore.errors.LeadscoreError` from any command becomes
    one line and exit 2 (3 for not enough data); every other exception is a bug and keeps its
    traceback (exit 1), instead of being dressed up as a user error."""

    def invoke(self, ctx: Any) -> Any:  # typer's vendored click Context (a private module)
        try:
            return super().invoke(ctx)
        except LeadscoreError as exc:
            raise typer.Exit(report_error(exc)) from exc


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
