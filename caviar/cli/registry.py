"""`caviar registry list | show | rollback`: the versions in results/registry.

To run: caviar registry list
"""

from __future__ import annotations

import json

import typer

from model.errors import UserError

registry_app = typer.Typer(
    help="Versions in results/registry: list, show, rollback.", no_args_is_help=True, rich_markup_mode=None
)


@registry_app.command("list")
def registry_list(as_json: bool = typer.Option(False, "--json", help="one JSON line: every version")) -> None:
    """Every version of every model, the current ones marked with *."""
    from caviar.registry.store import list_models, registry_root

    rows = list_models(registry_root())
    if as_json:
        typer.echo(json.dumps(rows))
        return
    if not rows:
        typer.echo(f"no models in {registry_root()}")
    for r in rows:
        mark = "*" if r["current"] else " "
        if r["damaged"]:
            typer.echo(f"{mark} {r['name']}/{r['version']}  DAMAGED: {r['damaged']}")
            continue
        acc = "" if r["test_accuracy"] is None else f"test_accuracy {r['test_accuracy']:.4f}"
        typer.echo(f"{mark} {r['name']}/{r['version']}  {acc}  {r['created']}  {r['trial_id']}")


@registry_app.command("show")
def registry_show(name: str, version: str = typer.Argument("current")) -> None:
    """The model card of a version (default: current)."""
    from caviar.registry.store import read_card, version_dir_of

    folder = version_dir_of(name, version)
    if not folder.exists():
        raise UserError(f"{folder}: no such model version")
    typer.echo(json.dumps(read_card(folder), indent=2, ensure_ascii=False))


@registry_app.command("rollback")
def registry_rollback(
    name: str, to: str | None = typer.Option(None, help="version, e.g. v1 (default: previous)")
) -> None:
    """Point `current` back at an earlier version (atomically)."""
    from caviar.registry.store import current_version, model_dir_of, rollback

    model_dir = model_dir_of(name)
    if not model_dir.is_dir():
        raise UserError(f"{model_dir}: no such model in the registry")
    try:
        before = current_version(model_dir)
    except UserError:
        before = "a damaged link"  # rollback --to repairs it
    typer.echo(f"{name}: current {before} -> {rollback(model_dir, to)}")
