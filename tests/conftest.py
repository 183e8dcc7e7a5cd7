"""Shared fixtures: the hand-written NSMC-format fixture, a private cache, and a tiny model config."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from model.config import TrialConfig

FIXTURE_NSMC = Path(__file__).parent / "fixtures" / "nsmc"
REAL_NSMC = Path(os.environ.get("NSMC_DIR", Path(__file__).parents[2] / "shared" / "data" / "nsmc"))

TINY = {
    "name": "tiny",
    "data": {"dir": str(FIXTURE_NSMC), "val_fraction": 0.2},
    "model": {"vocab_size": 300, "layers": 1, "hidden": 64, "heads": 2, "intermediate": 128, "max_len": 32},
    "train": {"lr": 3e-3, "batch_size": 8, "epochs": 3, "eval_every": 0.5, "num_threads": 1, "seed": 1},
}


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Tokenizers and downloads go to a throwaway cache, never the user's ~/.cache/caviar."""
    old = os.environ.get("CAVIAR_CACHE")
    os.environ["CAVIAR_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("CAVIAR_CACHE", None)
    else:
        os.environ["CAVIAR_CACHE"] = old


@pytest.fixture
def tiny_config() -> TrialConfig:
    return TrialConfig.model_validate(TINY)


def tiny_job_yaml(path: Path, **sections) -> Path:
    """Write a job file for the tiny config, with extra or replaced top-level sections."""
    import yaml

    path.write_text(yaml.safe_dump({**TINY, **sections}, allow_unicode=True), encoding="utf-8")
    return path


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run `caviar ARGS...` in this process through the real entry point; returns exit code and output."""
    from caviar.cli import main

    def run(*args) -> CliResult:
        monkeypatch.setattr(sys, "argv", ["caviar", *map(str, args)])
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        out = capsys.readouterr()
        return CliResult(code, out.out, out.err)

    return run
