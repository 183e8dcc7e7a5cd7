"""The `caviar` command.

To run: caviar --help
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import typer

from caviar.experiment.layout import timestamped
from caviar.job.loading import SET_HELP
from caviar.ops.allocator import run_on_jemalloc
from model.config import check_safe_name
from model.errors import UserError

SMOKE_HELP = "a seconds-long run of the job: 2 trials, 4 steps, 400 reviews, 1 CPU (what CI runs)"
app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True)


@app.callback()
def root() -> None:
    """caviar: tune a Korean sentiment classifier (NSMC) with Ray Tune, then promote and serve the best."""


@contextlib.contextmanager
def run_folder(folder: Path) -> Iterator[Path]:
    """Create the output folder before any work starts (a bad path fails in a second, not after
    training); if the run then fails before writing anything, the empty folder goes again."""
    fresh = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{folder}: cannot create the run folder ({err.strerror})") from None
    try:
        yield folder
    except BaseException:
        if fresh and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        raise


@app.command("train")
def train_cmd(
    job: Path = typer.Argument(..., help="tune_jobs/<job>.yaml"),
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
    as_json: bool = typer.Option(False, "--json", help="end with one JSON line of the results"),
    out: Path | None = typer.Option(None, help="run folder (default results/train/<name>-<time>)"),
    smoke: bool = typer.Option(False, "--smoke", help=SMOKE_HELP),
) -> None:
    """Train ONE configuration (the job's fixed values, no Ray) and report val and test metrics."""
    from caviar.job.loading import load_job
    from caviar.tuning.single_run import run_single

    spec = load_job(job, overrides, smoke=smoke)
    out = out or Path("results") / "train" / timestamped(spec.name)
    with run_folder(out):
        if spec.from_pretrain:
            from caviar.tuning.pretrain_stage import pretrain_stage

            spec, _ = pretrain_stage(spec)
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


@app.command("pretrain")
def pretrain_cmd(
    job: Path = typer.Argument(..., help="tune_jobs/<job>.yaml (its data, model and pretrain: sections)"),
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
    out: Path | None = typer.Option(None, help="folder (default <storage>/pretrain/<name>-<time>)"),
    as_json: bool = typer.Option(False, "--json", help="end with one JSON line: folder, mlm_loss, steps, wall_s"),
    smoke: bool = typer.Option(False, "--smoke", help=SMOKE_HELP),
) -> None:
    """Masked-LM pretraining of the job's model on the train split's texts; fine-tune it with
    --set model.pretrained=<folder>."""
    from caviar.job.loading import load_job
    from caviar.tuning.pretrain_stage import pretrain_root, run_pretrain

    spec = load_job(job, overrides, smoke=smoke)
    if spec.model.pretrained:
        raise UserError("model.pretrained is set: caviar pretrain starts the job's from-scratch model; unset it")
    out = out or pretrain_root(spec) / timestamped(spec.name)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} is not empty; pick another --out")
    with run_folder(out):
        card = run_pretrain(spec, out)
    typer.echo(
        f"MLM loss {card['mlm_loss']:.3f} after {card['steps']} steps on {card['texts']} train reviews, "
        f"{card['wall_s']:.0f}s",
        err=as_json,
    )
    typer.echo(f"pretrained model: {out}  (fine-tune it: --set model.pretrained={out})", err=as_json)
    if as_json:
        typer.echo(json.dumps({"folder": str(out), **{k: card[k] for k in ("mlm_loss", "steps", "wall_s")}}))


@app.command("lr-find")
def lr_find_cmd(
    job: Path = typer.Argument(..., help="tune_jobs/<job>.yaml"),
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
    out: Path | None = typer.Option(None, help="folder (default results/lr_find/<name>-<time>)"),
    as_json: bool = typer.Option(False, "--json", help="end with one JSON line of the suggestion"),
) -> None:
    """Leslie Smith's LR range test: suggests base_lr and max_lr from smoothed loss and accuracy."""
    from caviar.job.loading import load_job
    from caviar.tuning.lr_find_stage import lr_find

    spec = load_job(job, overrides)
    out = out or Path("results") / "lr_find" / timestamped(spec.name)
    with run_folder(out):
        result = lr_find(spec, out)
    typer.echo(
        f"base_lr {result['base_lr']:.2e}  max_lr {result['max_lr']:.2e}  ({result['steps']} steps"
        f"{', stopped at divergence' if result['diverged'] else ''})",
        err=as_json,
    )
    typer.echo(f"wrote {result['json']} and {result['plot']}", err=as_json)
    if as_json:
        keep = ("base_lr", "max_lr", "min_loss_lr", "steps", "diverged", "json", "plot")
        typer.echo(json.dumps({k: result[k] for k in keep}))


@app.command("tune")
def tune_cmd(
    job: Path = typer.Argument(..., help="tune_jobs/<job>.yaml"),
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
    address: str | None = typer.Option(None, help="Ray cluster to join, e.g. auto or ray://head:10001"),
    name: str | None = typer.Option(None, help="experiment folder name (default <job name>-<time>)"),
    as_json: bool = typer.Option(False, "--json", help="end with one JSON line of the results"),
    smoke: bool = typer.Option(False, "--smoke", help=SMOKE_HELP),
) -> None:
    """Tune: many trials in parallel on Ray Tune, weak ones stopped early; prints the best trial."""
    from caviar.job.loading import load_job
    from caviar.tuning.pipeline import tune_job

    spec = load_job(job, overrides, smoke=smoke)
    if name is not None:
        check_safe_name(name, "--name")
    _finish_tuning(lambda: tune_job(spec, address=address, experiment=name), spec.metric, as_json)


@app.command("resume")
def resume_cmd(
    experiment: Path = typer.Argument(..., help="results/<experiment>"),
    address: str | None = typer.Option(None, help="Ray cluster to join"),
    as_json: bool = typer.Option(False, "--json", help="end with one JSON line of the results"),
) -> None:
    """Continue an experiment whose driver stopped; finished trials are not run again."""
    from caviar.experiment.record import load_job_of
    from caviar.tuning.pipeline import resume_experiment

    metric = load_job_of(experiment).metric
    _finish_tuning(lambda: resume_experiment(experiment, address=address), metric, as_json)


def _finish_tuning(run, metric: str, as_json: bool) -> None:
    import ray

    from caviar.experiment.outcome import Interrupted, describe_best

    try:
        outcome = run()
    except Interrupted as stop:
        typer.echo(f"caviar: {stop}", err=True)
        raise typer.Exit(130) from None
    finally:
        ray.shutdown()
    for line in describe_best(outcome, metric):
        typer.echo(line, err=as_json)
    if as_json:
        typer.echo(json.dumps(outcome))


@app.command("report")
def report_cmd(
    experiment: Path = typer.Argument(..., help="results/<experiment>"),
    evaluate_top: int | None = typer.Option(None, "--evaluate-top", min=1, help="test-evaluate the K best"),
    as_json: bool = typer.Option(False, "--json", help="end with one JSON line of the report"),
) -> None:
    """Leaderboard (CSV, Markdown), report.json and plots of an experiment, read from disk."""
    from caviar.experiment.report import write_report

    report = write_report(experiment, evaluate_top)
    table = report.pop("table")
    typer.echo(table, err=as_json)
    typer.echo(f"wrote {', '.join(report['files'])} in {experiment}", err=as_json)
    if as_json:
        typer.echo(json.dumps(report))


@app.command("promote")
def promote_cmd(
    experiment: Path = typer.Argument(..., help="results/<experiment>, or results/train/<run> from caviar train"),
    name: str = typer.Option("nsmc-sentiment", help="registry name"),
    force: bool = typer.Option(False, help="promote even if its test accuracy is below the current version's"),
    reseed_seeds: int | None = typer.Option(None, "--reseed", min=2, help="re-train the top-K with S seeds first"),
    top_k: int | None = typer.Option(None, "--top-k", min=1, help="configurations to re-train (default 3)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Copy the best checkpoint into results/registry/<name>/v<N> and point `current` at it."""
    import ray

    from caviar.registry.promote import promote
    from caviar.registry.store import Refused

    try:
        done = promote(experiment, name, force=force, reseed_seeds=reseed_seeds, top_k=top_k)
    except Refused as refused:
        typer.echo(f"caviar: refused: {refused}", err=True)
        raise typer.Exit(1) from None
    finally:
        ray.shutdown()
    for config in (done["reseed"] or {}).get("configs", []):
        typer.echo(
            f"  config {config['rank']} ({config['source_trial']}): "
            f"val {config['val_mean']:.4f} ± {config['val_std']:.4f}  "
            f"test {config['test_mean']:.4f} ± {config['test_std']:.4f}",
            err=as_json,
        )
    typer.echo(
        f"promoted {done['name']}/{done['version']} (test_accuracy {done['test_accuracy']:.4f}); "
        f"current was {done['previous'] or 'none'}",
        err=as_json,
    )
    if as_json:
        typer.echo(json.dumps(done))


MODEL_HELP = "a model folder (default: <registry>/<name>/current; the registry is CAVIAR_REGISTRY or results/registry)"


def _model_folder(model: Path | None, name: str) -> Path:
    """--model wins; else the named model's `current` in the registry root (CAVIAR_REGISTRY)."""
    from caviar.registry.store import version_dir_of

    folder = model or version_dir_of(name)
    if not folder.exists():
        raise UserError(f"{folder}: no such model; promote one first (caviar promote results/<experiment>)")
    return folder


@app.command("serve")
def serve_cmd(
    name: str = typer.Option("nsmc-sentiment", help="registry model to serve (its current version)"),
    model: Path | None = typer.Option(None, help=MODEL_HELP),
    host: str = typer.Option("127.0.0.1", help="bind address; loopback unless you mean otherwise"),
    port: int = typer.Option(8000),
    threads: int | None = typer.Option(None, help="torch threads (default: all CPUs)"),
) -> None:
    """Serve the model with FastAPI; API key from CAVIAR_API_KEY if set. Docs at /docs (offline)."""
    from caviar.serving.app import serve

    folder = _model_folder(model, name)
    serve(folder, host, port, threads, announce=lambda line: typer.echo(line, err=True))


@app.command("predict")
def predict_cmd(
    texts: list[str] = typer.Argument(..., help="one or more Korean reviews"),
    name: str = typer.Option("nsmc-sentiment", help="registry model to use (its current version)"),
    model: Path | None = typer.Option(None, help=MODEL_HELP),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Label reviews with the promoted model: 긍정 (positive) or 부정 (negative), with the label's confidence."""
    from caviar.registry.store import verify
    from model.predict import Predictor

    folder = _model_folder(model, name)
    verify(folder)
    predictions = Predictor.from_checkpoint(folder).predict(texts)
    for text, p in zip(texts, predictions, strict=True):
        if as_json:
            typer.echo(json.dumps({"text": text, **p.as_dict(), "confidence": p.confidence}, ensure_ascii=False))
        else:
            typer.echo(f"{p.label}  {p.confidence:6.1%} sure  {text}")


from caviar.cli.cluster import register as _register_cluster  # noqa: E402
from caviar.cli.registry import registry_app  # noqa: E402

app.add_typer(registry_app, name="registry")
_register_cluster(app)


def _setup_logging() -> None:
    """caviar's own INFO lines; other libraries (Ray's packaging chatter) only from WARNING up."""
    logging.basicConfig(level=logging.WARNING, format="caviar: %(message)s", stream=sys.stderr)
    logging.getLogger("caviar").setLevel(logging.INFO)
    import transformers

    transformers.logging.set_verbosity_error()


def entry() -> None:
    """The `caviar` command (and `python -m caviar`): on jemalloc where it is installed, then `main`."""
    with _user_errors():
        run_on_jemalloc()  # this process pretrains, trains or finds a learning rate: all page churn
    main()


def main() -> None:
    _setup_logging()
    with _user_errors():
        app()


@contextlib.contextmanager
def _user_errors():
    """A user's mistake is one line on stderr and exit 2, never a traceback."""
    try:
        yield
    except UserError as err:
        typer.echo(f"caviar: error: {err}", err=True)
        sys.exit(2)
