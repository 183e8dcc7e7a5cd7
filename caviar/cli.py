"""The `caviar` command.

To run: caviar --help
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import typer

from model.errors import UserError

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True)


@app.callback()
def root() -> None:
    """caviar: tune a Korean sentiment classifier (NSMC) with Ray Tune, then promote and serve the best."""


SET_HELP = "override a job value, e.g. --set train.lr=3e-4 (repeatable)"


@app.command("train")
def train_cmd(
    job: Path = typer.Argument(..., help="tune_jobs/<job>.yaml"),
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
    as_json: bool = typer.Option(False, "--json", help="end with one JSON line of the results"),
    out: Path | None = typer.Option(None, help="run folder (default results/train/<name>-<time>)"),
) -> None:
    """Train ONE configuration (the job's fixed values, no Ray) and report val and test metrics."""
    from caviar.jobfile import load_job
    from caviar.single import run_single

    spec = load_job(job, overrides)
    out = out or Path("results") / "train" / f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    summary = run_single(spec, out)
    typer.echo(
        f"best val_accuracy {summary['val_accuracy']:.4f} (step {summary['best_step']}), "
        f"test_accuracy {summary['test_accuracy']:.4f}, test_f1 {summary['test_f1']:.4f}, "
        f"{summary['examples_per_s']:.0f} examples/s, {summary['wall_s']:.0f}s",
        err=as_json,
    )
    typer.echo(f"checkpoint: {summary['checkpoint']}", err=as_json)
    if as_json:
        typer.echo(json.dumps({k: v for k, v in summary.items() if k not in ("history", "config")}))


@app.command("tune")
def tune_cmd(
    job: Path = typer.Argument(..., help="tune_jobs/<job>.yaml"),
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
    address: str | None = typer.Option(None, help="Ray cluster to join, e.g. auto or ray://head:10001"),
    name: str | None = typer.Option(None, help="experiment folder name (default <job name>-<time>)"),
    as_json: bool = typer.Option(False, "--json", help="end with one JSON line of the results"),
) -> None:
    """Tune: many trials in parallel on Ray Tune, weak ones stopped early; prints the best trial."""
    from caviar.jobfile import load_job
    from caviar.tuner import tune_job

    spec = load_job(job, overrides)
    _finish_tuning(lambda: tune_job(spec, address=address, experiment=name), spec.metric, as_json)


@app.command("resume")
def resume_cmd(
    experiment: Path = typer.Argument(..., help="results/<experiment>"),
    address: str | None = typer.Option(None, help="Ray cluster to join"),
    as_json: bool = typer.Option(False, "--json", help="end with one JSON line of the results"),
) -> None:
    """Continue an experiment whose driver stopped; finished trials are not run again."""
    from caviar.experiment import load_job_of
    from caviar.tuner import resume_experiment

    metric = load_job_of(experiment).metric
    _finish_tuning(lambda: resume_experiment(experiment, address=address), metric, as_json)


def _finish_tuning(run, metric: str, as_json: bool) -> None:
    import ray

    from caviar.tuner import Interrupted, describe_best

    try:
        summary = run()
    except Interrupted as stop:
        typer.echo(f"caviar: {stop}", err=True)
        raise typer.Exit(130) from None
    finally:
        ray.shutdown()
    for line in describe_best(summary, metric):
        typer.echo(line, err=as_json)
    if as_json:
        typer.echo(json.dumps(summary))


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="caviar: %(message)s", stream=sys.stderr)
    import transformers

    transformers.logging.set_verbosity_error()


def main() -> None:
    _setup_logging()
    try:
        app()
    except UserError as err:
        typer.echo(f"caviar: error: {err}", err=True)
        sys.exit(2)
