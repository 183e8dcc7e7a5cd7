"""`caviar train | tune | resume | reseed | pretrain | lr-find`: the commands that train, each one call
into the pipeline (tuning/pipeline.py), which owns the stages and the data.

To run: caviar tune tune_jobs/quickstart.yaml
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import typer

from caviar.cli.results import EXPERIMENT_HELP, experiment_folder
from caviar.job.loading import SET_HELP, load_job
from caviar.job.schema import MAX_SEEDS, MAX_TOP_K, FinalSpec
from caviar.ops.allocator import missing_jemalloc_note
from model.config import check_safe_name
from model.errors import UserError

SMOKE_HELP = "a seconds-long run of the job: 2 trials, 4 steps, 400 reviews, 1 CPU (what CI runs)"
JSON_HELP = "end with one JSON line of the results (the rest goes to stderr)"
ADDRESS_HELP = "Ray cluster to join, e.g. auto or ray://head:10001 (default: a local Ray on this machine)"
VERBOSE_HELP = "Ray's own live table every 15 s instead of caviar's line per change"
JEMALLOC_NOTE_AFTER_S = 300.0
_started = time.monotonic()  # the command's start (command_started): the jemalloc note is for long runs only


def command_started() -> None:
    """The app's callback marks each command's start: one process may run several (the tests do)."""
    global _started
    _started = time.monotonic()


def register(app: typer.Typer) -> None:
    for name, command in (
        ("train", train_cmd),
        ("tune", tune_cmd),
        ("resume", resume_cmd),
        ("reseed", reseed_cmd),
        ("pretrain", pretrain_cmd),
        ("lr-find", lr_find_cmd),
    ):
        app.command(name)(command)


def _finish(lines: list[str], payload: dict, as_json: bool) -> None:

    for line in lines:
        typer.echo(line, err=as_json)
    # glibc's malloc costs a long run 7-11%, and a seconds-long one nothing worth a line
    if time.monotonic() - _started >= JEMALLOC_NOTE_AFTER_S and (note := missing_jemalloc_note()):
        typer.echo(note, err=True)
    if as_json:
        typer.echo(json.dumps(payload))


def _verbosity(verbose: bool) -> None:
    """--verbose: Ray's own live table instead of caviar's lines, for this process and its stages."""
    if verbose:
        os.environ["CAVIAR_VERBOSE"] = "1"


def train_cmd(
    job: Path = typer.Argument(..., help="tune_jobs/<job>.yaml"),
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    out: Path | None = typer.Option(None, help="run folder (default <storage>/train/<name>-<time>)"),
    smoke: bool = typer.Option(False, "--smoke", help=SMOKE_HELP),
) -> None:
    """Train ONE configuration (the job's fixed values, no Ray) and report val and test metrics."""
    # lazy: torch (~1.8 s) loads for the commands that use it, not for every `caviar` call
    from caviar.tuning.pipeline import train_job

    run = train_job(load_job(job, overrides, smoke=smoke, fixed_only=True), out)
    _finish(run.describe(), {k: v for k, v in run.as_json().items() if k not in ("history", "config")}, as_json)


def tune_cmd(
    job: Path = typer.Argument(..., help="tune_jobs/<job>.yaml"),
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
    address: str | None = typer.Option(None, help=ADDRESS_HELP),
    name: str | None = typer.Option(None, help="experiment folder name (default <job name>-<time>)"),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    smoke: bool = typer.Option(False, "--smoke", help=SMOKE_HELP),
    verbose: bool = typer.Option(False, "--verbose", help=VERBOSE_HELP),
) -> None:
    """Tune: many trials in parallel on Ray Tune, weak ones stopped early; prints the best trial."""
    # lazy: torch (~1.8 s) loads for the commands that use it, not for every `caviar` call
    from caviar.tuning.pipeline import tune_job

    _verbosity(verbose)
    spec = load_job(job, overrides, smoke=smoke)
    if name is not None:
        check_safe_name(name, "--name")
    _tuning(lambda: tune_job(spec, address=address, experiment=name), as_json)


def resume_cmd(
    experiment: str = typer.Argument(..., help="results/<experiment>, or its URI (s3://bucket/path/<experiment>)"),
    address: str | None = typer.Option(None, help=ADDRESS_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    verbose: bool = typer.Option(False, "--verbose", help=VERBOSE_HELP),
    trust_state: bool = typer.Option(
        False, "--trust-state", help="resume an experiment caviar did not save here (Ray unpickles its state)"
    ),
) -> None:
    """Continue an experiment whose driver stopped; finished trials are not run again."""
    # lazy: torch (~1.8 s) loads for the commands that use it, not for every `caviar` call
    from caviar.tuning.pipeline import resume_experiment

    _verbosity(verbose)
    if trust_state:  # the user vouches for the folder: its Ray state is signed as if caviar saved it here
        from caviar.tuning.search.tuner import trust_saved_state  # lazy: Ray (~0.6 s) loads where it runs

        trust_saved_state(experiment_folder(experiment))
    _tuning(lambda: resume_experiment(experiment, address=address), as_json)


def _tuning(run, as_json: bool) -> None:
    # lazy: Ray and torch (~2.4 s) load for the commands that use them
    import ray

    # lazy: torch (~1.8 s) loads for the commands that use it, not for every `caviar` call
    from caviar.experiment.outcome import Interrupted

    try:
        outcome = run()
    except Interrupted as stop:
        typer.echo(f"caviar: {stop}", err=True)
        raise typer.Exit(130) from None
    finally:
        ray.shutdown()
    if outcome is None:  # remote storage: nothing on this machine to summarize
        return
    _finish(outcome.describe(), outcome.as_json(), as_json)


def reseed_cmd(
    experiment: str = typer.Argument(..., help=EXPERIMENT_HELP),
    seeds: int = typer.Option(3, min=2, max=MAX_SEEDS, help="seeds per configuration"),
    top_k: str = typer.Option(
        "3", "--top-k", help="configurations to re-train, best first; `tied`: the best and those tied with it"
    ),
    max_tied: int = typer.Option(4, "--max-tied", min=1, max=9, help="with --top-k tied: at most this many tied"),
    address: str | None = typer.Option(None, help=ADDRESS_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    verbose: bool = typer.Option(False, "--verbose", help=VERBOSE_HELP),
) -> None:
    """Re-train the top-K configurations with S new seeds; `caviar promote` then takes the chosen one's best seed."""
    _verbosity(verbose)
    # lazy: Ray and torch (~2.4 s) load for the commands that use them
    import ray

    from caviar.tuning.pipeline import reseed_experiment

    if top_k != "tied" and not (top_k.isdigit() and int(top_k) >= 1):
        raise UserError(f"--top-k {top_k[:40]!r}: expected a count of 1 or more, or `tied`")
    if top_k != "tied" and int(top_k) > MAX_TOP_K:
        raise UserError(f"--top-k {top_k[:40]}: at most {MAX_TOP_K} configurations (each is re-trained --seeds times)")
    final = FinalSpec(seeds=seeds, top_k=top_k if top_k == "tied" else int(top_k), max_tied=max_tied)
    try:
        spread = reseed_experiment(experiment_folder(experiment), final, address)
    finally:
        ray.shutdown()
    _finish(spread.describe(), spread.as_json(), as_json)


def pretrain_cmd(
    job: Path = typer.Argument(..., help="tune_jobs/<job>.yaml (its data, model and pretrain: sections)"),
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
    out: Path | None = typer.Option(None, help="folder (default <storage>/pretrain/<name>-<time>)"),
    as_json: bool = typer.Option(
        False, "--json", help="end with one JSON line: folder, objective, mlm_loss (disc_loss), steps, wall_s"
    ),
    smoke: bool = typer.Option(False, "--smoke", help=SMOKE_HELP),
) -> None:
    """Pretraining of the job's model on the train split's texts (masked-LM, or ELECTRA with
    --set pretrain.objective=electra); fine-tune it with --set model.pretrained=<folder>."""
    # lazy: torch (~1.8 s) loads for the commands that use it, not for every `caviar` call
    from caviar.tuning.pipeline import pretrain_job

    folder, card = pretrain_job(load_job(job, overrides, smoke=smoke, fixed_only=True), out)
    payload = {"folder": str(folder), "objective": card.objective, "mlm_loss": card.mlm_loss, "steps": card.steps}
    payload |= {"wall_s": card.wall_s, **({"disc_loss": card.disc_loss} if card.objective == "electra" else {})}
    _finish(card.describe(folder), payload, as_json)


def lr_find_cmd(
    job: Path = typer.Argument(..., help="tune_jobs/<job>.yaml"),
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
    out: Path | None = typer.Option(None, help="folder (default <storage>/lr_find/<name>-<time>)"),
    as_json: bool = typer.Option(False, "--json", help="end with one JSON line of the suggestion"),
) -> None:
    """Leslie Smith's LR range test: suggests base_lr and max_lr from smoothed loss and accuracy."""
    # lazy: torch (~1.8 s) loads for the commands that use it, not for every `caviar` call
    from caviar.tuning.pipeline import lr_find_job

    found = lr_find_job(load_job(job, overrides, fixed_only=True), out)
    _finish(found.describe(), found.as_json(), as_json)
