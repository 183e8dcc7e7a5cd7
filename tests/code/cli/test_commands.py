"""The command line's own promises: one-line errors for a cluster that is not there and for empty
reviews, help without type clutter, and commands that need no training start without a restart."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from caviar.cli.main import TRAINING_COMMANDS, trains
from tests.conftest import tiny_job_yaml


def run(*args, env=None, timeout=60):
    return subprocess.run(
        [sys.executable, "-m", "caviar", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize("address", ["127.0.0.1:6399", "auto"])
def test_a_cluster_that_is_not_there_is_one_line_and_leaves_no_folder(tmp_path, address):
    job = tiny_job_yaml(tmp_path / "job.yaml", storage=str(tmp_path / "results"))
    env = {"RAY_ADDRESS": ""} if address == "auto" else None
    started = time.perf_counter()
    proc = run("tune", job, "--address", address, env=env, timeout=60)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert time.perf_counter() - started < 30
    lines = proc.stderr.strip().splitlines()
    assert (
        len(lines) == 1
        and lines[0].startswith(f"caviar: error: --address {address}: ")
        and "Traceback" not in proc.stderr
    )
    assert "cluster/local.sh up" in lines[0]
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("text", ["", "   ", "\u200b\u200b"])
def test_predict_refuses_a_review_with_nothing_to_classify(cli, text):
    proc = cli("predict", "좋아요", text)
    assert proc.returncode == 2 and proc.stderr.startswith("caviar: error: review 2: text must not be empty")


@pytest.mark.parametrize("command", [["promote"], ["predict"], ["registry", "list"], ["tune"], ["jobs", "list"]])
def test_help_shows_flags_without_type_clutter(cli, command):
    proc = cli(*command, "--help")
    assert proc.returncode == 0
    assert "<bool>" not in proc.stdout
    if "--json" in proc.stdout:  # every --json says what it prints
        line = next(ln for ln in proc.stdout.splitlines() if ln.strip().startswith("--json"))
        assert len(line.strip()) > len("--json") + 5, line


def test_only_the_commands_that_train_restart_on_jemalloc():
    assert set(TRAINING_COMMANDS) == {"train", "tune", "resume", "reseed", "pretrain", "lr-find"}
    assert trains(["tune", "job.yaml"]) and trains(["train", "job.yaml", "--set", "x=1"])
    assert not trains(["serve"]) and not trains(["registry", "list"]) and not trains(["tune", "--help"])
    assert not trains([])
