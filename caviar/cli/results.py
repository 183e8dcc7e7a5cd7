"""`caviar report | promote`: an experiment's leaderboard and plots, and its best model into the registry.

To run: caviar report results/<experiment>
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from caviar.cli.registry import REGISTRY_OPTION, chosen_registry, say_registry

JSON_HELP = "end with one JSON line of the results (the rest goes to stderr)"


def register(app: typer.Typer) -> None:
    app.command("report")(report_cmd)
    app.command("promote")(promote_cmd)
    app.command("experiments")(experiments_cmd)
    app.command("ls", hidden=True)(experiments_cmd)  # the short name


def experiments_cmd(
    storage: str = typer.Argument("results", help="the storage the experiments are in: a folder, or s3://bucket/path"),
    as_json: bool = typer.Option(False, "--json", help="one JSON document: every experiment"),
) -> None:
    """List the experiments in a storage (alias: ls): job, state, trials, best metric, age, size."""
    # lazy: torch (~1.8 s) loads for the commands that use it, not for every `caviar` call
    from caviar.experiment.listing import list_experiments, table
    from caviar.experiment.object_store import is_uri

    lines = list_experiments(storage)
    shown = storage if is_uri(storage) else str(Path(storage).expanduser().resolve())
    if as_json:
        typer.echo(json.dumps({"storage": shown, "experiments": [x.as_json() for x in lines]}))
        return
    typer.echo(table(lines, shown))


def experiment_folder(location: str) -> Path:
    """A folder as given, or for an experiment on object storage (s3://, gs://) its mirror, brought
    up to date: everything but the checkpoints' weights (experiment/object_store.py)."""
    # lazy: torch (~1.8 s) loads for the commands that use it, not for every `caviar` call
    from caviar.experiment.object_store import Mirror, is_uri

    return Mirror.of(location).pull() if is_uri(location) else Path(location)


EXPERIMENT_HELP = "results/<experiment>, or its URI on object storage (s3://bucket/path/<experiment>)"


def report_cmd(
    experiment: str = typer.Argument(..., help=EXPERIMENT_HELP),
    evaluate_top: int | None = typer.Option(None, "--evaluate-top", min=1, help="test-evaluate the K best"),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Leaderboard (CSV, Markdown), report.json and plots of an experiment, read from disk."""
    # lazy: torch (~1.8 s) loads for the commands that use it, not for every `caviar` call
    from caviar.experiment.object_store import mirror_of
    from caviar.experiment.report import write_report

    folder = experiment_folder(experiment)
    shown = write_report(folder, evaluate_top)
    report = shown.record
    if (mirror := mirror_of(folder)) is not None:  # the files go where the experiment is
        mirror.push(*report.files)
    typer.echo(shown.table, err=as_json)
    typer.echo(shown.importance_line, err=as_json)
    for note in report.notes:
        typer.echo(note, err=as_json)
    typer.echo(f"wrote {', '.join(report.files)} in {experiment}", err=as_json)
    if as_json:
        typer.echo(json.dumps(report.as_json()))


def promote_cmd(
    experiment: str = typer.Argument(..., help=EXPERIMENT_HELP + ", or results/train/<run> from caviar train"),
    name: str = typer.Option("nsmc-sentiment", help="registry name"),
    force: bool = typer.Option(
        False, "--force", help="promote even if the gate split shows no gain over the version in service"
    ),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    registry: str | None = REGISTRY_OPTION,
) -> None:
    """Copy the best checkpoint into the registry (<registry>/<name>/v<N>) and point `current` at it, if it beats
    the version in service on the gate split (paired 95%). On MLflow's registry it becomes a registered
    version, aliased @champion if it passes and @challenger if not. After `caviar reseed`, the best seed of the
    configuration with the best mean is the candidate."""
    # lazy: torch (~1.8 s) loads for the commands that use it, not for every `caviar` call
    from caviar.registry.promote import promote
    from caviar.registry.store import Refused

    chosen = chosen_registry(registry)
    try:
        if chosen.mlflow_uri:
            from caviar.registry.mlflow_promote import promote_to_mlflow  # lazy: MLflow is an optional extra

            done = promote_to_mlflow(experiment_folder(experiment), name, chosen.mlflow_uri, force=force)
        else:
            done = promote(experiment_folder(experiment), name, force=force, root=chosen.root)
    except Refused as refused:
        typer.echo(f"caviar: refused: {refused}", err=True)
        raise typer.Exit(1) from None
    for line in done.describe():
        typer.echo(line, err=as_json)
    say_registry(registry=chosen)
    if as_json:
        typer.echo(json.dumps(done.as_json()))
