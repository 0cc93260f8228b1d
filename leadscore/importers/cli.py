"""``leadscore import ...`` commands: map a CRM export onto the CRM tables and show what happened."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from leadscore.cli_context import console, print_validation_report, settings_from

if TYPE_CHECKING:
    from leadscore.importers.common import ImportReport

app = typer.Typer(no_args_is_help=True)


def _print_report(report: ImportReport, json_out: Path | None) -> None:
    """Mapping per file, unmapped columns, notes, then the usual validation report."""
    from rich.table import Table

    for m in report.files:
        table = Table(title=f"{report.source}: {m.file}")
        table.add_column("export column")
        table.add_column("→ field")
        for target, src in m.mapping.items():
            table.add_row(src, target)
        console.print(table)
        if m.unmapped:
            console.print(f"[yellow]unmapped columns ({len(m.unmapped)}):[/yellow] {', '.join(m.unmapped)}")
    for note in report.notes:
        console.print(f"[cyan]note:[/cyan] {note}")
    print_validation_report(report.validation)
    console.print(f"tables written to {report.out_dir}")
    if json_out:
        json_out.write_text(json.dumps(report.to_dict(), indent=2, default=str))
    if not report.validation.usable:
        console.print("[red]the imported history is not usable for scoring as it stands (see 'status')[/red]")
        raise typer.Exit(1)


@app.command()
def hubspot(
    ctx: typer.Context,
    contacts: Annotated[Path, typer.Option(help="HubSpot contacts export (CSV).")],
    out: Annotated[Path, typer.Option(help="Directory to write the CRM tables into.")],
    companies: Annotated[Path | None, typer.Option(help="HubSpot companies export (CSV).")] = None,
    deals: Annotated[Path | None, typer.Option(help="HubSpot deals export (CSV).")] = None,
    cutoff: Annotated[str | None, typer.Option(help="Data cut-off (default: latest timestamp in the export).")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the report as JSON here.")] = None,
) -> None:
    """Import a HubSpot CRM export (contacts, optional companies and deals)."""
    from leadscore.importers.hubspot import import_hubspot

    report = import_hubspot(contacts, out, settings_from(ctx), companies=companies, deals=deals, cutoff=cutoff)
    _print_report(report, json_out)


@app.command()
def salesforce(
    ctx: typer.Context,
    leads: Annotated[Path, typer.Option(help="Salesforce Lead export (CSV).")],
    out: Annotated[Path, typer.Option(help="Directory to write the CRM tables into.")],
    history: Annotated[Path | None, typer.Option(help="Salesforce LeadHistory export (CSV).")] = None,
    opportunities: Annotated[Path | None, typer.Option(help="Salesforce Opportunity export (CSV).")] = None,
    accounts: Annotated[Path | None, typer.Option(help="Salesforce Account export (CSV).")] = None,
    campaign_members: Annotated[
        Path | None, typer.Option(help="Salesforce CampaignMember export (CSV): responses become activities.")
    ] = None,
    status_map: Annotated[
        Path | None, typer.Option(help="YAML {Salesforce lead status: stage} added to the default mapping.")
    ] = None,
    cutoff: Annotated[str | None, typer.Option(help="Data cut-off (default: latest timestamp in the export).")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the report as JSON here.")] = None,
) -> None:
    """Import Salesforce exports (Lead, optional LeadHistory, Opportunity, Account, CampaignMember)."""
    from leadscore.importers.salesforce import import_salesforce

    report = import_salesforce(
        leads, out, settings_from(ctx), history=history, opportunities=opportunities,
        accounts=accounts, status_map=status_map, cutoff=cutoff, campaign_members=campaign_members,
    )
    _print_report(report, json_out)
