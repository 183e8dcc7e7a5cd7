"""`caviar registry list | show | rollback`: the versions in the registry (~/.local/share/caviar/registry,
or MLflow's model registry with CAVIAR_REGISTRY=mlflow:<tracking URI>).

To run: caviar registry list
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import typer

from caviar.experiment.layout import legacy_registry, registry_root
from model.errors import UserError
from model.settings import MLFLOW_REGISTRY, names_mlflow

REGISTRY_HELP = (
    "the registry: a folder, or mlflow:<tracking URI> for MLflow's model registry "
    "(default: CAVIAR_REGISTRY, else ~/.local/share/caviar/registry)"
)


@dataclass(frozen=True)
class Registry:
    """The registry a command uses: MLflow's at `mlflow_uri`, else the folder `root`."""

    mlflow_uri: str | None = None
    root: Path | None = None

    @property
    def shown(self) -> str:
        return f"{MLFLOW_REGISTRY}{self.mlflow_uri}" if self.mlflow_uri else str(self.root)


def chosen_registry(given: str | None) -> Registry:
    """--registry, else CAVIAR_REGISTRY, else the user's folder registry."""
    chosen = given if given is not None else os.environ.get("CAVIAR_REGISTRY", "")
    if names_mlflow(chosen):
        if not (uri := chosen.removeprefix(MLFLOW_REGISTRY)):
            raise UserError(
                f"registry {chosen!r}: give the tracking URI after {MLFLOW_REGISTRY}, e.g. {MLFLOW_REGISTRY}http://127.0.0.1:5000"
            )
        return Registry(mlflow_uri=uri)
    return Registry(root=Path(given).expanduser().resolve() if given else registry_root())


def registry_lines(registry: Registry | None = None) -> list[str]:
    """Where the registry is (every command that uses it says so), and an earlier caviar's registry
    left in the project's results/, with the command that moves it."""
    import shlex

    registry = registry or chosen_registry(None)
    if registry.mlflow_uri:
        return [f"registry: {registry.shown}"]
    root = registry.root
    lines = [f"registry: {root}"]
    if old := legacy_registry():
        to, was = shlex.quote(str(root)), shlex.quote(str(old))
        lines.append(
            f"note: {old} holds models of an earlier caviar, which kept its registry there; "
            f"move them with: mkdir -p {to} && mv {was}/* {to}/"
        )
    return lines


def say_registry(err: bool = True, registry: Registry | None = None) -> None:
    """Said once a command has used the registry: an error stays one line."""
    for line in registry_lines(registry):
        typer.echo(f"caviar: {line}" if err else line, err=err)


registry_app = typer.Typer(
    help="Versions in the registry (CAVIAR_REGISTRY, else ~/.local/share/caviar/registry): list, show, rollback.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


REGISTRY_OPTION = typer.Option(None, "--registry", help=REGISTRY_HELP)


@registry_app.command("list")
def registry_list(
    as_json: bool = typer.Option(False, "--json", help="one JSON line: every version"),
    registry: str | None = REGISTRY_OPTION,
) -> None:
    """Every version of every model, the current ones (MLflow: @champion) marked with *."""
    chosen = chosen_registry(registry)
    if chosen.mlflow_uri:
        from caviar.registry.mlflow_promote import mlflow_rows  # lazy: MLflow is an optional extra

        rows = mlflow_rows(chosen.mlflow_uri)
    else:
        from caviar.registry.store import list_models  # lazy: torch (~1.8 s) loads only where used

        rows = list_models(chosen.root)
    if as_json:
        typer.echo(json.dumps(rows))
        return
    say_registry(err=False, registry=chosen)
    if not rows:
        typer.echo(f"no models in {chosen.shown}")
    for r in rows:
        mark = "*" if r["current"] else " "
        if r["damaged"]:
            typer.echo(f"{mark} {r['name']}/{r['version']}  DAMAGED: {r['damaged']}")
            continue
        acc = "" if r["test_accuracy"] is None else f"test_accuracy {r['test_accuracy']:.4f}"
        aliases = "".join(f"  @{a}" for a in r.get("aliases", []))
        gate = f"  gate {r['gate']}" if r.get("gate") else ""
        typer.echo(f"{mark} {r['name']}/{r['version']}{aliases}  {acc}  {r['created']}  {r['trial_id']}{gate}")


@registry_app.command("show")
def registry_show(
    name: str = typer.Argument(..., help="a model, or model/version as `registry list` prints it"),
    version: str | None = typer.Argument(None, help="v<N> or current (default: current; MLflow: @champion)"),
    registry: str | None = REGISTRY_OPTION,
) -> None:
    """The model card of a version (default: current)."""
    # lazy: torch (~1.8 s) loads for the commands that use it, not for every `caviar` call
    from caviar.registry.store import CURRENT, VERSION, read_card, version_dir_of

    model, _, tail = name.rpartition("/")
    if version is None and model and (tail == CURRENT or VERSION.fullmatch(tail)):  # nsmc-sentiment/v2, as listed
        name, version = model, tail
    chosen = chosen_registry(registry)
    if chosen.mlflow_uri:
        typer.echo(
            json.dumps(read_card(_mlflow_version(chosen.mlflow_uri, name, version)), indent=2, ensure_ascii=False)
        )
        return
    folder = version_dir_of(name, version or CURRENT, chosen.root)
    if not folder.exists():
        raise UserError(f"{folder}: no such model version")
    typer.echo(json.dumps(read_card(folder), indent=2, ensure_ascii=False))


def _mlflow_version(uri: str, name: str, version: str | None) -> Path:
    """A version of MLflow's registry (default: @champion), downloaded and checked."""
    # lazy: MLflow is an optional extra, imported only for its registry
    from caviar.registry.mlflow_registry import CHAMPION, MlflowRegistry, version_number

    found = MlflowRegistry(uri, name)
    found.require()
    number = found.alias(CHAMPION) if version in (None, "current") else version_number(version)
    if number is None:
        raise UserError(f"{name}: no version is @{CHAMPION} in MLflow at {uri}; name one, e.g. v1")
    return found.fetch(number)


@registry_app.command("rollback")
def registry_rollback(
    name: str,
    to: str | None = typer.Option(None, help="version, e.g. v1 (default: previous)"),
    registry: str | None = REGISTRY_OPTION,
) -> None:
    """Point `current` (MLflow: @champion) back at an earlier version (atomically)."""
    chosen = chosen_registry(registry)
    if chosen.mlflow_uri:
        from caviar.registry.mlflow_promote import rollback_in_mlflow  # lazy: MLflow is an optional extra

        before, after = rollback_in_mlflow(chosen.mlflow_uri, name, to)
        typer.echo(f"{name}: @champion {'none' if before is None else f'v{before}'} -> v{after}")
        return
    # lazy: torch (~1.8 s) loads for the commands that use it, not for every `caviar` call
    from caviar.registry.store import current_version, model_dir_of, rollback

    model_dir = model_dir_of(name, chosen.root)
    if not model_dir.is_dir():
        raise UserError(f"{model_dir}: no such model in the registry")
    try:
        before = current_version(model_dir)
    except UserError:  # rollback --to repairs it
        copied = (model_dir / "current").is_dir() and not (model_dir / "current").is_symlink()
        before = "a folder, not a link" if copied else "a damaged link"
    typer.echo(f"{name}: current {before} -> {rollback(model_dir, to)}")
