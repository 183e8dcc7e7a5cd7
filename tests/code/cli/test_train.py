"""CLI checks for `caviar train`: bad job files and overrides exit 2 with one line; a tiny run end to end."""

from __future__ import annotations

import json
import re

import pytest

from caviar.cli import training
from caviar.ops import allocator
from tests.conftest import tiny_job_yaml


def one_error_line(proc) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("caviar: error:")]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


BAD_YAML = [
    ("train:\n  lrr: 0.1\n", "train.lrr: unknown key"),
    ("surprise: 1\n", "surprise: unknown key"),
    ("train:\n  lr: fast\n", "train.lr: Input should be a valid number"),
    ("train:\n  lr: -1\n", "train.lr: Input should be greater than 0"),
    ("train:\n  epochs: 1.5\n", "train.epochs: Input should be a valid integer"),
    (
        "train:\n  schedule: exponential\n",
        "train.schedule: Input should be 'constant', 'linear', 'cosine' or 'cyclical'",
    ),
    ("model:\n  hidden: 100\n  heads: 3\n", "model.hidden (100) must be divisible by model.heads (3)"),
    ("train:\n  base_lr: 0.1\n  max_lr: 0.01\n", "train.base_lr (0.1) must be below train.max_lr (0.01)"),
    ("data:\n  val_fraction: 1.5\n", "data.val_fraction: Input should be less than 1"),
    ("train: [1, 2\n", "job.yaml: expected ',' or ']'"),
    ("- just\n- a list\n", "the top level must be a mapping of keys, got list"),
    ("train: 3\n", "train: Input should be a valid dictionary"),
]


@pytest.mark.parametrize(("text", "message"), BAD_YAML)
def test_bad_yaml_exits_2_naming_the_key(cli, tmp_path, text, message):
    job = tmp_path / "job.yaml"
    job.write_text(text, encoding="utf-8")
    line = one_error_line(cli("train", job))
    assert message in line
    assert str(job) in line


BAD_SETS = [
    ("train.lrr=1", "--set train.lrr=1: train.lrr: unknown key"),
    ("train.lr=abc", "train.lr: Input should be a valid number"),
    ("train.batch_size=0", "train.batch_size: Input should be greater than or equal to 1"),
    ("train.lr", "--set train.lr: expected key=value"),
    ("=3", "expected key=value"),
    ("train.lr.x=1", "train.lr is a value, not a section"),
    ("nosuch.key=1", "nosuch: unknown key"),
    ("model.head=[1", "--set model.head=[1: the value is not valid YAML"),
]


@pytest.mark.parametrize(("assignment", "message"), BAD_SETS)
def test_bad_set_exits_2_naming_the_key(cli, tmp_path, assignment, message):
    job = tiny_job_yaml(tmp_path / "job.yaml")
    line = one_error_line(cli("train", job, "--set", assignment))
    assert message in line


def test_missing_job_file(cli, tmp_path):
    assert "nope.yaml: no such job file" in one_error_line(cli("train", tmp_path / "nope.yaml"))


def test_missing_data_folder_is_one_line(cli, tmp_path):
    job = tiny_job_yaml(tmp_path / "job.yaml", data={"dir": str(tmp_path / "void")})
    assert "does not hold ratings_train.txt" in one_error_line(cli("train", job))


@pytest.mark.slow
def test_train_end_to_end_json(cli, tmp_path):
    job = tiny_job_yaml(tmp_path / "job.yaml")
    proc = cli("train", job, "--json", "--out", tmp_path / "run", "--set", "train.eval_every=1.0")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"val_accuracy", "test_accuracy", "examples_per_s", "checkpoint", "test_f1"} <= set(summary)
    assert summary["val_accuracy"] >= 0.75 and summary["test_accuracy"] >= 0.75
    assert (tmp_path / "run" / "checkpoint" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "run" / "result.json").read_text())["checkpoint"] == summary["checkpoint"]
    assert "val_accuracy" in proc.stderr  # the per-evaluation lines
    # issue 31, item 6: each evaluation line and the result carry the 95% interval
    low, high = summary["best_interval"]
    assert low <= summary[summary["metric"]] <= high and summary["confidence"] == 0.95
    assert re.search(r"val_accuracy 0\.\d{4} \[0\.\d{4}, [01]\.\d{4}\]", proc.stderr), proc.stderr[-1500:]


def test_lr_find_cli_writes_json_and_plot(cli, tmp_path, monkeypatch):
    monkeypatch.setattr(allocator, "SEARCHED", ())  # as on a machine without jemalloc
    monkeypatch.setattr(training, "JEMALLOC_NOTE_AFTER_S", 0.0)  # as after a long run
    for name in ("CAVIAR_JEMALLOC", "CAVIAR_ALLOCATOR", "LD_PRELOAD"):
        monkeypatch.delenv(name, raising=False)
    job = tiny_job_yaml(tmp_path / "job.yaml", lr_find={"min_lr": 1e-5, "max_lr": 1.0, "steps": 60, "eval_points": 6})
    proc = cli("lr-find", job, "--out", tmp_path / "lr", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert 1e-5 <= result["base_lr"] < result["max_lr"] <= 1.0
    saved = json.loads((tmp_path / "lr" / "lr_find.json").read_text())
    assert len(saved["lrs"]) == len(saved["losses"]) == result["steps"]
    assert proc.stderr.count("base_lr") == 1, proc.stderr  # issue 9.26: the result once
    assert proc.stderr.strip().splitlines()[-1] == allocator.MISSING_NOTE  # why the run was slower


def test_a_short_run_ends_without_the_jemalloc_note(cli, tmp_path, monkeypatch):
    """The note is for runs long enough for glibc's malloc to cost something (issue 48.6)."""
    monkeypatch.setattr(allocator, "SEARCHED", ())
    for name in ("CAVIAR_JEMALLOC", "CAVIAR_ALLOCATOR", "LD_PRELOAD"):
        monkeypatch.delenv(name, raising=False)
    assert allocator.missing_jemalloc_note() == allocator.MISSING_NOTE  # jemalloc is missing here
    job = tiny_job_yaml(tmp_path / "job.yaml", lr_find={"min_lr": 1e-5, "max_lr": 1.0, "steps": 20, "eval_points": 2})
    proc = cli("lr-find", job, "--out", tmp_path / "lr")
    assert proc.returncode == 0, proc.stderr
    assert allocator.MISSING_NOTE not in proc.stderr


def _lr_find_stderr(tmp_path, terminal: bool) -> str:
    """`caviar lr-find` in a child process, its stderr a terminal (a pty) or a pipe, as read back."""
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios

    job = tiny_job_yaml(tmp_path / "job.yaml", lr_find={"min_lr": 1e-5, "max_lr": 1.0, "steps": 20, "eval_points": 2})
    cmd = [
        sys.executable,
        "-c",
        "from caviar.cli.main import main; main()",
        "lr-find",
        str(job),
        "--out",
        str(tmp_path / "lr"),
    ]
    if not terminal:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return proc.stderr
    controller, child_end = pty.openpty()
    fcntl.ioctl(child_end, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a new pty is 0 columns wide
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=child_end)
    os.close(child_end)
    chunks = []
    while True:  # read until the child closes its end: EOF, or EIO on Linux
        try:
            chunk = os.read(controller, 4096)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(controller)
    assert proc.wait(timeout=120) == 0, b"".join(chunks).decode(errors="replace")[-2000:]
    return b"".join(chunks).decode("utf-8", errors="replace")


def test_lr_find_prints_the_data_line_before_its_bar(tmp_path):
    """Issue 9.26: the data line used to land inside the progress bar (on a terminal, where bars show)."""
    lines = _lr_find_stderr(tmp_path, terminal=True).replace("\r", "\n").splitlines()
    data = [i for i, ln in enumerate(lines) if ln.startswith("caviar: data ")]
    bar = [i for i, ln in enumerate(lines) if "lr range test" in ln]
    assert len(data) == 1 and bar and data[0] < bar[0], lines
    assert (tmp_path / "lr" / "lr_find.png").read_bytes().startswith(b"\x89PNG")


def test_no_progress_bar_when_stderr_is_not_a_terminal(tmp_path):
    """Issue 48.6: in a log file tqdm's redraws are noise; the other lines stay."""
    stderr = _lr_find_stderr(tmp_path, terminal=False)
    assert "lr range test" not in stderr and "\r" not in stderr, stderr[-2000:]
    assert "caviar: data " in stderr and (tmp_path / "lr" / "lr_find.json").is_file()
