"""The `caviar` command: one sub-command per module of caviar/cli/.

To run: caviar --help

Commands that train (train, tune, resume, reseed, pretrain, lr-find) restart the process once on
jemalloc where it is installed (ops/allocator.py); every other command starts directly.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path

import typer

from caviar.cli import registry, results, serving, submit, training
from caviar.job.reference import job_reference
from caviar.ops.allocator import run_on_jemalloc
from model.errors import UserError
from model.files import is_out_of_space, out_of_space

TRAINING_COMMANDS = ("train", "tune", "resume", "reseed", "pretrain", "lr-find")
app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True, rich_markup_mode=None)


def version_line() -> str:
    """`caviar 0.1.0 (ray 2.60.0, torch 2.13.0, python 3.11.7)`: what a bug report needs first."""
    from importlib import metadata

    def of(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "not installed"

    python = ".".join(map(str, sys.version_info[:3]))
    return f"caviar {of('caviar')} (ray {of('ray')}, torch {of('torch')}, python {python})"


def _print_version(asked: bool) -> None:
    if asked:
        typer.echo(version_line())
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="print the versions and exit"
    ),
) -> None:
    """caviar: tune a Korean sentiment classifier (NSMC) with Ray Tune, then promote and serve the best."""
    training.command_started()


@app.command("schema")
def schema_cmd() -> None:
    """Print the job-file reference (every key, its type, default and description) as Markdown."""
    typer.echo(job_reference(), nl=False)


def _register() -> None:
    for module in (training, results, serving, submit):
        module.register(app)
    app.add_typer(registry.registry_app, name="registry")


_register()


def _setup_logging() -> None:
    """caviar's own INFO lines; other libraries (Ray's packaging chatter) only from WARNING up."""
    logging.basicConfig(level=logging.WARNING, format="caviar: %(message)s", stream=sys.stderr)
    logging.getLogger("caviar").setLevel(logging.INFO)


def trains(argv: list[str]) -> bool:
    """The first word that is not an option names a command that trains."""
    words = [a for a in argv if not a.startswith("-")]
    return bool(words) and words[0] in TRAINING_COMMANDS and "--help" not in argv


def entry() -> None:
    """The `caviar` command (and `python -m caviar`): a training command on jemalloc where it is
    installed, then `main`."""
    if trains(sys.argv[1:]):
        with user_errors():
            run_on_jemalloc()  # this process pretrains, trains or finds a learning rate: all page churn
    main()


def main() -> None:
    _setup_logging()
    with user_errors():
        app()


@contextlib.contextmanager
def user_errors(program: str = "caviar"):
    """A user's mistake is one line on stderr and exit 2, never a traceback (the benchmarks use it too)."""
    try:
        yield
    except UserError as err:
        typer.echo(f"{program}: error: {err}", err=True)
        sys.exit(2)
    except OSError as err:  # a full disk where no stage said more: still one line, with where
        if not is_out_of_space(err):
            raise
        where = Path(err.filename).parent if err.filename else Path.cwd()
        typer.echo(f"{program}: error: {out_of_space(where, 'free some and run it again')}", err=True)
        sys.exit(2)
