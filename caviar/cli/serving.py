"""`caviar serve | predict`: the promoted model over HTTP, or on the command line.

To run: caviar predict "정말 재미있어요"
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from model.errors import UserError

MODEL_HELP = "a model folder (default: <registry>/<name>/current; the registry is CAVIAR_REGISTRY or results/registry)"


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_cmd)
    app.command("predict")(predict_cmd)


def _model_folder(model: Path | None, name: str) -> Path:
    """--model wins; else the named model's `current` in the registry root (CAVIAR_REGISTRY)."""
    from caviar.registry.store import version_dir_of

    folder = model or version_dir_of(name)
    if not folder.exists():
        raise UserError(f"{folder}: no such model; promote one first (caviar promote results/<experiment>)")
    return folder


def serve_cmd(
    name: str = typer.Option("nsmc-sentiment", help="registry model to serve (its current version)"),
    model: Path | None = typer.Option(None, help=MODEL_HELP),
    host: str = typer.Option("127.0.0.1", help="bind address; loopback unless you mean otherwise"),
    port: int = typer.Option(8000, help="port to listen on"),
    threads: int | None = typer.Option(None, help="torch threads (default: all CPUs)"),
) -> None:
    """Serve the model with FastAPI; API key from CAVIAR_API_KEY if set. Docs at /docs (offline)."""
    from caviar.serving.app import serve

    serve(_model_folder(model, name), host, port, threads, announce=lambda line: typer.echo(line, err=True))


def predict_cmd(
    texts: list[str] = typer.Argument(..., help="one or more Korean reviews"),
    name: str = typer.Option("nsmc-sentiment", help="registry model to use (its current version)"),
    model: Path | None = typer.Option(None, help=MODEL_HELP),
    as_json: bool = typer.Option(False, "--json", help="one JSON line per review"),
) -> None:
    """Label reviews with the promoted model: 긍정 (positive) or 부정 (negative), with the label's confidence."""
    from caviar.registry.store import verify
    from caviar.serving.schemas import check_text
    from model.predict import Predictor

    for i, text in enumerate(texts, start=1):
        try:
            check_text(text)
        except ValueError as err:
            raise UserError(f"review {i}: {err}") from None
    folder = _model_folder(model, name)
    verify(folder)
    predictions = Predictor.from_checkpoint(folder).predict(texts)
    for text, p in zip(texts, predictions, strict=True):
        if as_json:
            typer.echo(json.dumps({"text": text, **p.as_dict(), "confidence": p.confidence}, ensure_ascii=False))
        else:
            typer.echo(f"{p.label}  {p.confidence:6.1%} sure  {text}")
