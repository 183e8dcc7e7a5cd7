"""`caviar serve | predict`: the promoted model over HTTP, or on the command line.

To run: caviar predict "정말 재미있어요"
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from caviar.cli.registry import REGISTRY_OPTION, Registry, chosen_registry, say_registry
from caviar.experiment.layout import legacy_registry
from caviar.serving.schemas import check_text
from model.errors import UserError

MODEL_HELP = (
    "a model folder (default: <registry>/<name>/current; the registry is CAVIAR_REGISTRY "
    "or ~/.local/share/caviar/registry)"
)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_cmd)
    app.command("predict")(predict_cmd)


def _model_folder(model: Path | None, name: str, registry: Registry) -> Path:
    """--model wins; else the named model's `current` in the folder registry."""
    # lazy: torch (~1.8 s) loads for the commands that use it, not for every `caviar` call
    from caviar.registry.store import version_dir_of

    folder = model or version_dir_of(name, root=registry.root)
    if not folder.exists():
        old = legacy_registry() if model is None else None
        hint = f"; an earlier caviar's registry is in {old} (caviar registry list says how to move it)" if old else ""
        raise UserError(f"{folder}: no such model; promote one first (caviar promote results/<experiment>){hint}")
    return folder


def _champion(registry: Registry, name: str):
    """The MLflow alias a command serves: `@champion` of the registered model, which must exist."""
    # lazy: MLflow is an optional extra, imported only for its registry
    from caviar.registry.mlflow_registry import CHAMPION, MlflowRegistry
    from caviar.serving.live import AliasSource

    found = MlflowRegistry(registry.mlflow_uri, name)
    found.require()
    return AliasSource(found, CHAMPION)


def serve_cmd(
    name: str = typer.Option("nsmc-sentiment", help="registry model to serve (its current version)"),
    model: Path | None = typer.Option(None, help=MODEL_HELP),
    registry: str | None = REGISTRY_OPTION,
    host: str = typer.Option("127.0.0.1", help="bind address; loopback unless you mean otherwise"),
    port: int = typer.Option(8000, min=0, max=65535, help="port to listen on (0: any free port, announced)"),
    threads: int | None = typer.Option(None, min=1, max=1024, help="torch threads (default: all CPUs)"),
    keep_alive: float = typer.Option(
        75.0,
        min=1.0,
        max=3600.0,
        help="seconds an idle connection stays open; keep it above your clients' and proxy's idle timeout",
    ),
) -> None:
    """Serve the model with FastAPI; API key from CAVIAR_API_KEY if set. Docs at /docs (offline)."""
    # lazy: torch (~1.8 s) loads for the commands that use it, not for every `caviar` call
    from caviar.serving.app import serve

    chosen = chosen_registry(registry)
    announce = lambda line: typer.echo(line, err=True)  # noqa: E731
    if chosen.mlflow_uri and model is None:  # follows @champion as a folder registry's `current`
        serve(None, host, port, threads, announce=announce, source=_champion(chosen, name), keep_alive_s=keep_alive)
        return
    serve(_model_folder(model, name, chosen), host, port, threads, announce=announce, keep_alive_s=keep_alive)


def predict_cmd(
    texts: list[str] = typer.Argument(None, help="one or more Korean reviews (or --file)"),
    file: str | None = typer.Option(None, "--file", help="reviews one per line, UTF-8; - reads standard input"),
    output: str = typer.Option("text", "--format", help="text (aligned), tsv (with a header) or jsonl"),
    name: str = typer.Option("nsmc-sentiment", help="registry model to use (its current version)"),
    model: Path | None = typer.Option(None, help=MODEL_HELP),
    as_json: bool = typer.Option(False, "--json", help="the same as --format jsonl"),
    registry: str | None = REGISTRY_OPTION,
) -> None:
    """Label reviews with the promoted model: 긍정 (positive) or 부정 (negative), with the label's confidence."""
    # lazy: torch (~1.8 s) loads for the commands that use it, not for every `caviar` call
    from caviar.serving.live import load_checked

    output = "jsonl" if as_json else output
    if output not in PREDICT_FORMATS:
        raise UserError(f"--format {output[:40]!r}: use one of {', '.join(PREDICT_FORMATS)}")
    if bool(texts) == (file is not None):
        raise UserError(
            "give reviews as arguments or with --file (- for standard input), not both"
            if texts
            else "no reviews: give them as arguments, or with --file F (- for standard input)"
        )
    reviews = _reviews_from(file) if file is not None else _checked(_from_argv(texts), "review")
    chosen = chosen_registry(registry)
    if chosen.mlflow_uri and model is None:
        source = _champion(chosen, name)
        folder = source.folder(source.target())  # downloaded once, every sha256 checked against its tags
    else:
        folder = _model_folder(model, name, chosen)
    predictor = load_checked(folder).predictor  # checked as `serve` checks it: sums, load, a sane warm-up answer
    if model is None:
        say_registry(registry=chosen)
    if output == "tsv":
        typer.echo("label\tconfidence\tpositive_probability\ttext")
    for start in range(0, len(reviews), PREDICT_CHUNK):  # answers stream out as each chunk is scored
        chunk = reviews[start : start + PREDICT_CHUNK]
        for number, (text, p) in enumerate(zip(chunk, predictor.predict(chunk), strict=True), start=start + 1):
            if not 0.0 <= p.positive_probability <= 1.0:  # NaN too: no answer is printed from such a model
                raise UserError(
                    f"{folder}: its answer for review {number} is {p.positive_probability}, not a probability"
                )
            typer.echo(_predicted(text, p, output))


PREDICT_FORMATS = ("text", "tsv", "jsonl")
PREDICT_CHUNK = 1024  # reviews scored per call; the model batches them further


def _predicted(text: str, p, output: str) -> str:
    if output == "jsonl":
        return json.dumps({"text": text, **p.as_dict(), "confidence": p.confidence}, ensure_ascii=False)
    if output == "tsv":
        flat = text.replace("\t", " ")
        return f"{p.label}\t{p.confidence:.4f}\t{p.positive_probability:.4f}\t{flat}"
    return f"{p.label}  {p.confidence:6.1%} sure  {text}"


def _reviews_from(file: str) -> list[str]:
    """One review a line; blank lines are passed over (and counted), anything else unreadable is an
    error naming its line, before any review is scored."""
    import sys

    where = "standard input" if file == "-" else file
    try:
        data = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    except OSError as err:
        raise UserError(f"--file {file}: cannot read it ({err.strerror or err})") from None
    try:
        lines = data.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise UserError(f"{where}: not UTF-8 (byte 0x{data[err.start]:02x} on line {line}); save it as UTF-8") from None
    numbered = [(i, line) for i, line in enumerate(lines, start=1) if line.strip()]
    if not numbered:
        raise UserError(f"{where}: no reviews (every line is blank)")
    if blank := len(lines) - len(numbered):
        typer.echo(f"caviar: passed over {blank} blank line{'s' if blank > 1 else ''} of {where}", err=True)
    return _checked(numbered, f"{where}: line")


def _from_argv(texts: list[str]) -> list[tuple[int, str]]:
    """The reviews given as arguments, numbered. Python hands on bytes that are not UTF-8 as lone
    surrogates (U+DC80..U+DCFF); they are said as the bytes they were (issue 47)."""
    for i, text in enumerate(texts, start=1):
        if (at := next((n for n, ch in enumerate(text) if "\udc80" <= ch <= "\udcff"), None)) is not None:
            byte = ord(text[at]) - 0xDC00
            raise UserError(
                f"review {i}: not UTF-8 (byte 0x{byte:02x} at character {at + 1}); "
                "give UTF-8 text (a UTF-8 locale, or --file F with UTF-8 lines)"
            )
    return list(enumerate(texts, start=1))


def _checked(numbered: list[tuple[int, str]], what: str) -> list[str]:

    for i, text in numbered:
        try:
            check_text(text)
        except ValueError as err:
            raise UserError(f"{what} {i}: {err}") from None
    return [text for _, text in numbered]
