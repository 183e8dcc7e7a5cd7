"""Running `caviar tune` as a user would, for the tuner tests: each run is a subprocess, which joins
the worker's shared Ray head (`env`: the ray_head fixture) or, where the test kills it, starts its
own; with helpers to kill a driver midway and to wait on what its trials wrote."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import TRIAL_START_TIMEOUT_S

TUNE = {
    "search_space": {"train.lr": {"loguniform": [3e-4, 1e-2]}, "train.weight_decay": {"uniform": [0.0, 0.1]}},
    "scheduler": {"type": "asha", "max_t": 6, "grace_period": 1, "reduction_factor": 2},
    "num_samples": 6,
    "max_concurrent_trials": 2,
    "resources_per_trial": {"cpu": 1},
    "checkpoint": {"num_to_keep": 1, "keep_best_trials": 2},
    "seed": 3,
}


def caviar_cmd(*args) -> list[str]:
    return [sys.executable, "-c", "from caviar.cli.main import main; main()", *map(str, args)]


def run_caviar(*args, env: dict, timeout=300) -> subprocess.CompletedProcess:
    """The command's result, run with `env` (the ray_head fixture's, to join the shared head); one
    that runs past `timeout` fails the test with the end of its stderr (what a hang printed last is
    where to look)."""
    try:
        return subprocess.run(caviar_cmd(*args), capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        tail = err.stderr if isinstance(err.stderr, str) else (err.stderr or b"").decode(errors="replace")
        pytest.fail(f"caviar {args[0]} ran past {timeout} s; its stderr ended:\n{tail[-4000:]}")


def summary_of(proc) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def rows(result: Path) -> int:
    return sum(1 for line in result.read_text().splitlines() if line.strip())


def tune_killed_when(job: Path, ready, what: str = "", name: str = "killed", poll_s: float = 0.05):
    """`caviar tune` the job in its own session, then SIGKILL the driver and the local Ray it started
    once `ready()` is true (a value, or True); returns that value. Without `what`, `ready` waits by
    itself and is called once."""
    driver = subprocess.Popen(
        caviar_cmd("tune", job, "--name", name),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        if not what:
            return ready()
        deadline = time.time() + TRIAL_START_TIMEOUT_S
        while not (got := ready()):
            assert time.time() < deadline and driver.poll() is None, f"{what} never reported"
            time.sleep(poll_s)
        return got
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()


def wait_for_finished_trial(experiment: Path, timeout: float, evaluations: int) -> set[str]:
    """Poll until one trial has finished and another is early in its run: 3 or more evaluations, at
    most half of its `evaluations`, and a checkpoint of its own on disk (the event). The state Ray
    saved alongside then names a checkpoint to resume it from, and the trial is many evaluations
    from its end when the kill lands, however loaded the machine."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        time.sleep(0.2)
        done, early = set(), 0
        for result in experiment.glob("*/result.json"):
            lines = [json.loads(x) for x in result.read_text().splitlines() if x.strip()]
            if lines and lines[-1].get("done_training"):
                done.add(lines[-1]["trial_id"])
            elif 3 <= len(lines) <= evaluations // 2 and any(result.parent.glob("checkpoint_*/caviar.json")):
                early += 1
        if done and early:
            return done
        if len(done) == 4:
            raise AssertionError("every trial finished before the driver could be killed")
    raise AssertionError(f"no trial finished within {timeout}s")


def wait_for_reports(experiment: Path, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if any(p.stat().st_size for p in experiment.glob("*/result.json")):
            return
        time.sleep(0.3)
    raise AssertionError(f"no trial reported within {timeout}s")
