"""The ``maskfactory`` command. Sub-commands call into flows, simulators and the review service;
each stays a thin shell around library functions so they can be tested without the CLI."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="maskfactory: batch labelling for segmentation datasets.",
    no_args_is_help=True,
    add_completion=False,
)
table_app = typer.Typer(help="Inspect Delta or Parquet tables on local disk or S3.", no_args_is_help=True)
models_app = typer.Typer(help="The model registry.", no_args_is_help=True)
app.add_typer(table_app, name="table")
app.add_typer(models_app, name="models")

console = Console()


@table_app.command("show")
def table_show(
    uri: str = typer.Argument(..., help="Table URI: a Delta table folder or a Parquet file/folder."),
    rows: int = typer.Option(5, "--rows", "-n", min=0, help="How many first rows to print."),
) -> None:
    """Row count, schema and first rows of a table."""
    from maskfactory.infra.inspect import describe_table  # heavy imports only for this command

    try:
        info = describe_table(uri, rows)
    except FileNotFoundError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from e
    version = "" if info.version is None else f", version {info.version}"
    console.print(f"[bold]{info.uri}[/bold]  ({info.format}{version})")
    console.print(f"rows: {info.num_rows}")
    schema = Table("column", "type", title="schema", title_justify="left")
    for field in info.schema:
        schema.add_row(field.name, str(field.type))
    console.print(schema)
    if rows:
        console.print(info.head.to_string(max_colwidth=40) if len(info.head) else "(no rows)")


@models_app.command("list")
def models_list() -> None:
    """Registered models and their default checkpoints."""
    from maskfactory.models.registry import REGISTRY

    out = Table("name", "family", "default checkpoint", "note")
    for spec in REGISTRY.values():
        out.add_row(spec.name, spec.family, spec.default_checkpoint or "(pass a URI)", spec.note)
    console.print(out)
