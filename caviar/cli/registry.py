"""`caviar registry list | show | rollback`: the versions in the registry (~/.local/share/caviar/registry).

To run: caviar registry list
"""

from __future__ import annotations

import json

import typer

from caviar.experiment.layout import legacy_registry, registry_root
from model.errors import UserError


def registry_lines() -> list[str]:
    """Where the registry is (every command that uses it says so), and an earlier caviar's registry
    left in the project's results/, with the command that moves it."""
    import shlex

    root = registry_root()
    lines = [f"registry: {root}"]
    if old := legacy_registry():
        to, was = shlex.quote(str(root)), shlex.quote(str(old))
        lines.append(
            f"note: {old} holds models of an earlier caviar, which kept its registry there; "
            f"move them with: mkdir -p {to} && mv {was}/* {to}/"
        )
    return lines


def say_registry(err: bool = True) -> None:
    """Said once a command has used the registry: an error stays one line."""
    for line in registry_lines():
        typer.echo(f"caviar: {line}" if err else line, err=err)


registry_app = typer.Typer(
    help="Versions in the registry (CAVIAR_REGISTRY, else ~/.local/share/caviar/registry): list, show, rollback.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@registry_app.command("list")
def registry_list(as_json: bool = typer.Option(False, "--json", help="one JSON line: every version")) -> None:
    """Every version of every model, the current ones marked with *."""
    # lazy: torch (~1.8 s) loads for the commands that use it, not for every `caviar` call
    from caviar.registry.store import list_models, registry_root

    rows = list_models(registry_root())
    if as_json:
        typer.echo(json.dumps(rows))
        return
    say_registry(err=False)
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
def registry_show(
    name: str = typer.Argument(..., help="a model, or model/version as `registry list` prints it"),
    version: str | None = typer.Argument(None, help="v<N> or current (default: current)"),
) -> None:
    """The model card of a version (default: current)."""
    # lazy: torch (~1.8 s) loads for the commands that use it, not for every `caviar` call
    from caviar.registry.store import CURRENT, VERSION, read_card, version_dir_of

    model, _, tail = name.rpartition("/")
    if version is None and model and (tail == CURRENT or VERSION.fullmatch(tail)):  # nsmc-sentiment/v2, as listed
        name, version = model, tail
    folder = version_dir_of(name, version or CURRENT)
    if not folder.exists():
        raise UserError(f"{folder}: no such model version")
    typer.echo(json.dumps(read_card(folder), indent=2, ensure_ascii=False))


@registry_app.command("rollback")
def registry_rollback(
    name: str, to: str | None = typer.Option(None, help="version, e.g. v1 (default: previous)")
) -> None:
    """Point `current` back at an earlier version (atomically)."""
    # lazy: torch (~1.8 s) loads for the commands that use it, not for every `caviar` call
    from caviar.registry.store import current_version, model_dir_of, rollback

    model_dir = model_dir_of(name)
    if not model_dir.is_dir():
        raise UserError(f"{model_dir}: no such model in the registry")
    try:
        before = current_version(model_dir)
    except UserError:  # rollback --to repairs it
        copied = (model_dir / "current").is_dir() and not (model_dir / "current").is_symlink()
        before = "a folder, not a link" if copied else "a damaged link"
    typer.echo(f"{name}: current {before} -> {rollback(model_dir, to)}")
