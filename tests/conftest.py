"""Shared fixtures: the hand-written NSMC-format fixture, a private cache, and a tiny model config."""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from model.config import TrialConfig
from tests import ray_processes

FIXTURE_NSMC = Path(__file__).parent / "fixtures" / "nsmc"
REAL_NSMC = Path(os.environ.get("NSMC_DIR", Path(__file__).parents[2] / "shared" / "data" / "nsmc"))

# Deadlines on waits that include trials starting bound a stuck run only, never a healthy one's speed.
# Ray runs trial workers at nice 15, so any nice-0 load starves their start: on this 2-CPU machine,
# beside two busy nice-0 loops, a local.sh cluster's first trial reports came 291 s after submit,
# against 13 s when idle and 22 s beside one loop.
TRIAL_START_TIMEOUT_S = 480

TINY = {
    "name": "tiny",
    "data": {"dir": str(FIXTURE_NSMC), "val_fraction": 0.2},
    "model": {"vocab_size": 300, "layers": 1, "hidden": 64, "heads": 2, "intermediate": 128, "max_len": 32},
    "train": {"lr": 3e-3, "batch_size": 8, "epochs": 3, "eval_every": 0.5, "num_threads": 1, "seed": 1},
}


def pytest_configure(config):
    """Every Ray this pytest process starts carries its own tag, so the leak checks count only their
    own worker's Ray (tests/ray_processes.py); the tag is set before any fixture can start one. Its
    session folders go to a temp folder of its own (short: Ray's socket paths are length-limited),
    removed at the end, rather than piling up in /tmp/ray run after run."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    os.environ[ray_processes.TAG] = f"{worker}-{secrets.token_hex(4)}"
    config._caviar_ray_tmp = os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="cvr", dir="/tmp")
    # one key signs Ray's saved state for the whole run (ray_compat/state_signature.py): an experiment
    # one worker made, another resumes; never the user's own key file
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID") or secrets.token_hex(8)
    os.environ["CAVIAR_STATE_KEY"] = hashlib.sha256(run.encode()).hexdigest()


def pytest_unconfigure(config):
    folder = getattr(config, "_caviar_ray_tmp", None)
    if folder is None:
        return
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        sys.modules["ray"].shutdown()  # before its folder goes
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Tokenizers and downloads go to a throwaway cache, never the user's ~/.cache/caviar, and the
    default registry to a throwaway data folder, never the user's ~/.local/share/caviar."""
    private = {"CAVIAR_CACHE": tmp_path_factory.mktemp("cache"), "XDG_DATA_HOME": tmp_path_factory.mktemp("data")}
    old = {name: os.environ.get(name) for name in private}
    os.environ.update({name: str(folder) for name, folder in private.items()})
    yield
    for name, value in old.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def tiny_config() -> TrialConfig:
    return TrialConfig.model_validate(TINY)


# the fixture's 240 reviews hold about 12 gate reviews, far below the 500 a real promotion asks
TINY_PROMOTE = {"min_gate_reviews": 5}


def tiny_job_yaml(path: Path, **sections) -> Path:
    """Write a job file for the tiny config, with extra or replaced top-level sections."""
    import yaml

    job = {**TINY, "promote": TINY_PROMOTE, **sections}
    path.write_text(yaml.safe_dump(job, allow_unicode=True), encoding="utf-8")
    return path


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run `caviar ARGS...` in this process through the real entry point; returns exit code and output."""
    from caviar.cli.main import main

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


# One trial at a time: ASHA's decisions then follow from the job alone, not from which of two
# concurrent trials reached a rung first (the tiny trials tie at chance accuracy on the early rungs,
# and with two at a time CI once saw an order in which ASHA stopped none). Sequential costs no wall
# time here: 16.4 s against 16.5 s for two at a time.
FINISHED_TUNE = {
    "search_space": {"train.lr": {"loguniform": [3e-4, 1e-2]}, "model.dropout": {"choice": [0.0, 0.1]}},
    "scheduler": {"type": "asha", "max_t": 6, "grace_period": 1, "reduction_factor": 2},
    "num_samples": 4,
    "max_concurrent_trials": 1,
    "checkpoint": {"num_to_keep": 1, "keep_best_trials": 3},
    "seed": 5,
}


@pytest.fixture(scope="session")
def experiment(tmp_path_factory, worker_id) -> Path:
    """A finished tiny experiment, copied to a fresh folder: reading it must not need the driver.
    Shared by the results, the service and the README tests. One tuning run serves every xdist
    worker (the first to ask tunes it, under a lock in the run's shared temp folder); each worker
    gets its own copy, since the tests write reports and plots into it."""
    import shutil

    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    shared = base if worker_id == "master" else base.parent  # parent: this run's, common to its workers
    finished = shared / "finished-experiment"
    with FileLock(str(shared / "finished-experiment.lock")):
        if not finished.is_dir():
            _tune_finished_experiment(shared / "tuning", finished)
    copied = tmp_path_factory.mktemp("exp") / "copied"
    shutil.copytree(finished, copied)
    return copied


def _tune_finished_experiment(tmp: Path, finished: Path) -> None:
    import shutil
    import subprocess

    shutil.rmtree(tmp, ignore_errors=True)  # what a worker that failed here left
    tmp.mkdir()
    # the data comes from NSMC_DIR, as with `make tune`: every test that reads this experiment back
    # (without NSMC_DIR, or with another one) checks that the experiment recorded where its data is
    job = tiny_job_yaml(tmp / "job.yaml", storage=str(tmp / "results"), data={"val_fraction": 0.2}, **FINISHED_TUNE)
    proc = subprocess.run(
        [sys.executable, "-c", "from caviar.cli.main import main; main()", "tune", job, "--name", "done", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NSMC_DIR": str(FIXTURE_NSMC)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    shutil.copytree(tmp / "results" / "done", tmp / "copied")
    (tmp / "copied").rename(finished)  # whole or absent: a worker that failed midway leaves no half copy
    shutil.rmtree(tmp)


def variant_of(experiment: Path, folder: Path, nudge: float = 1e-4) -> Path:
    """A copy of the experiment whose checkpoints hold other weights (one bias nudged): a second,
    distinct candidate, since the registry does not promote the same weights twice."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(experiment, folder)
    for weights in folder.glob("*/checkpoint_*/model.safetensors"):
        tensors = load_file(weights)
        bias = next(k for k in sorted(tensors) if k.endswith("bias"))
        tensors[bias] = tensors[bias] + nudge
        save_file(tensors, weights, metadata={"format": "pt"})
    return folder


@pytest.fixture(scope="session")
def hub_standin(tmp_path_factory) -> Path:
    """A folder shaped like a hub download (klue/bert-base's path without the download): config,
    weights and a WordPiece tokenizer, all from save_pretrained."""
    from transformers import BertConfig, BertModel

    from model import tokenizer as tk
    from model.config import DataConfig
    from model.data import load_splits

    folder = tmp_path_factory.mktemp("tiny-bert")
    texts = load_splits(DataConfig(dir=str(FIXTURE_NSMC))).train.document.tolist()
    tokenizer = tk.wrap(tk.train_wordpiece(texts, 300))
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> dict[str, str]:
    """The AWS_* environment of this worker's S3-compatible store on loopback (moto's server, with one
    bucket), shared by the tests that need one; each test module writes under its own prefix."""
    from caviar.ops.local_store import object_store

    with object_store(tmp_path_factory.mktemp("store") / "moto.log") as env:
        yield env


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory) -> str:
    """A tracking server on loopback (`mlflow server`, SQLite and an artifact folder), shared by the
    tests that need one and always stopped; each test logs under its own experiment name."""
    from caviar.ops.local_mlflow import mlflow_server

    with mlflow_server(tmp_path_factory.mktemp("mlflow")) as uri:
        yield uri


@pytest.fixture
def registry_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("CAVIAR_REGISTRY", str(tmp_path / "registry"))
    return tmp_path / "registry"


def _hypothesis_profile() -> None:
    """No example database in the checkout: CI starts clean, and nothing lands in a job's working_dir."""
    from hypothesis import settings

    settings.register_profile("caviar", database=None)
    settings.load_profile("caviar")


_hypothesis_profile()


def leaves(value):
    """Every scalar inside nested dicts and lists (JSON as Python)."""
    if isinstance(value, dict):
        for v in value.values():
            yield from leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from leaves(v)
    else:
        yield value
