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


def test_a_cluster_that_does_not_answer_is_one_line_and_leaves_no_folder(tmp_path):
    job = tiny_job_yaml(tmp_path / "job.yaml", storage=str(tmp_path / "results"))
    started = time.perf_counter()
    proc = run("tune", job, "--address", "127.0.0.1:6399", timeout=60)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert time.perf_counter() - started < 30
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert lines[0].startswith("caviar: error: --address 127.0.0.1:6399: no Ray cluster answers at 127.0.0.1:6399")
    assert "cluster/local.sh up" in lines[0]
    assert not (tmp_path / "results").exists()


def test_address_auto_with_no_cluster_running_is_one_line(monkeypatch):
    """In-process, with Ray's lookup finding nothing: whether a cluster runs on this machine is not
    this test's to decide (another test's cluster may be up)."""
    import ray._private.services as services

    from caviar.tuning.ray_compat.connection import check_reachable
    from model.errors import UserError

    def nothing(addr, temp_dir):
        raise ConnectionError("Could not find any running Ray instance.")

    monkeypatch.setattr(services, "get_ray_address_from_environment", nothing)
    with pytest.raises(UserError, match="--address auto: no Ray cluster is running on this machine; start one"):
        check_reachable("auto")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("garbage", "RAY_ADDRESS=garbage: expected host:port, ray://host:port or auto"),
        ("127.0.0.1:1", "RAY_ADDRESS=127.0.0.1:1: no Ray cluster answers at 127.0.0.1:1"),
    ],
)
def test_a_ray_address_in_the_environment_is_checked_as_address_is(cli, tmp_path, monkeypatch, value, message):
    """Issue 47: RAY_ADDRESS=garbage with tune was `ValueError: Invalid address format` from ray.init."""
    from tests.conftest import tiny_job_yaml

    monkeypatch.setenv("RAY_ADDRESS", value)
    proc = cli("tune", tiny_job_yaml(tmp_path / "job.yaml", storage=str(tmp_path / "results")))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"caviar: error: {message}"), proc.stderr
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


def test_predict_refuses_bytes_that_are_not_utf8():
    """Hardening 2, item 7: argv bytes that are not UTF-8 got a TypeError from the tokenizer; then
    (issue 47) a message about "a lone surrogate", which is how Python hands such bytes on."""
    argv = [sys.executable, "-m", "caviar", "predict", "좋아요", "좋".encode() + b"\xff\xfe"]
    proc = subprocess.run(argv, capture_output=True, timeout=60)
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 2 and "Traceback" not in err
    assert err.startswith("caviar: error: review 2: not UTF-8 (byte 0xff at character 2); give UTF-8 text"), err


def test_remote_storage_that_cannot_be_reached_is_one_line(tmp_path):
    """Hardening 2, item 5: the bucket is checked before the first trial (71 lines of traceback before)."""
    job = tiny_job_yaml(tmp_path / "job.yaml")
    proc = run("tune", job, "--set", "storage=s3://nonexistent-bucket/caviar", timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert lines[0].startswith("caviar: error: storage s3://nonexistent-bucket/caviar: cannot reach it")


def test_serve_keep_alive_defaults_to_the_services_own():
    """The CLI writes the default out (importing the limits would load uvicorn for every command),
    so this keeps the two from drifting apart."""
    import inspect

    from caviar.cli.serving import serve_cmd
    from caviar.serving.limits import KEEP_ALIVE_S

    assert inspect.signature(serve_cmd).parameters["keep_alive"].default.default == KEEP_ALIVE_S
