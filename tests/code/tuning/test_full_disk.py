"""A full disk is one line, never a traceback, and a tune stopped by it resumes once there is room
(hardening, round two, item 11). The disks are real: small tmpfs mounts, where this machine allows
mounting (root); elsewhere these tests skip."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from caviar.job.loading import load_job
from caviar.ops.disk_room import reserve_bytes, room_for_search
from caviar.registry import store as registry
from caviar.registry.promote import promote
from model.files import free_bytes
from tests.code.tuning.tune_runs import TUNE, caviar_cmd, run_caviar, summary_of
from tests.conftest import tiny_job_yaml

pytestmark = pytest.mark.slow
MB = 10**6


@pytest.fixture
def small_disk(tmp_path):
    """mount(size_mb) -> a fresh tmpfs of that size; unmounted at teardown."""
    mounted = []

    def mount(size_mb: float) -> Path:
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={int(size_mb * MB)}", "tmpfs", str(point)])
        if done.returncode != 0:
            pytest.skip("cannot mount a small tmpfs here (needs root)")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


def one_line(proc) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    (line,) = [ln for ln in proc.stderr.splitlines() if "no space left on" in ln]
    return line


def test_a_tune_that_cannot_fit_a_checkpoint_does_not_start(cli, small_disk, tmp_path):
    disk = small_disk(1)
    job = tiny_job_yaml(tmp_path / "job.yaml", storage=str(disk), **TUNE)
    proc = cli("tune", job, "--name", "full")
    assert proc.returncode == 2
    line = one_line(proc)
    assert f"no space left on {disk}/full:" in line and "MB free; free some and run it again" in line
    assert "this needs about" in line and list(disk.iterdir()) == []  # not even caviar_job.json


def test_a_tune_that_fills_the_disk_stops_in_one_line_and_resumes_once_there_is_room(small_disk, tmp_path, ray_head):
    spec = {**TUNE, "num_samples": 2}
    job_file = tiny_job_yaml(tmp_path / "job.yaml", storage="placeholder", **spec)
    room = room_for_search(load_job(job_file, [f"storage={tmp_path}"]))
    disk = small_disk(room / MB + 8)
    job_file = tiny_job_yaml(tmp_path / "job.yaml", storage=str(disk), **spec)
    experiment = disk / "full"
    driver = subprocess.Popen(
        caviar_cmd("tune", job_file, "--name", "full"), stderr=subprocess.PIPE, text=True, env=ray_head
    )
    deadline = time.monotonic() + 120
    while not (experiment / "caviar_job.json").is_file() and time.monotonic() < deadline:
        time.sleep(0.05)
    # fill it the way other work on the machine would: a file that leaves less than the reserve
    ballast = disk / "ballast"
    with ballast.open("wb") as f:
        f.write(b"\0" * max(free_bytes(disk) - reserve_bytes(load_job(job_file, [])) // 2, 0))
    _, stderr = driver.communicate(timeout=300)
    assert driver.returncode == 2, stderr[-3000:]
    line = one_line(subprocess.CompletedProcess([], 2, "", stderr))
    assert f"no space left on {experiment}:" in line and f"resume {experiment} continues once there is room" in line

    ballast.unlink()
    summary = summary_of(run_caviar("resume", experiment, "--json", env=ray_head))
    assert len(summary["trials"]) == spec["num_samples"]
    assert all(t["status"] in ("finished", "stopped") for t in summary["trials"]), summary["trials"]


def test_a_train_that_hits_a_full_disk_midway_is_one_line(cli, small_disk, tmp_path, monkeypatch):
    """No room check first (patched out): the writers' own ENOSPC is what is turned into one line."""
    disk = small_disk(0.3)
    monkeypatch.setattr("caviar.tuning.pipeline.room_for_single", lambda job: 0)
    job = tiny_job_yaml(tmp_path / "job.yaml", storage=str(tmp_path))
    proc = cli("train", job, "--out", disk / "run")
    assert proc.returncode == 2
    assert f"no space left on {disk}/run:" in one_line(proc) and "run it again once there is room" in proc.stderr
    assert not (disk / "run").exists()  # nothing worth keeping: the folder went again


def test_a_promote_into_a_full_registry_is_one_line_and_changes_nothing(
    cli, experiment, small_disk, monkeypatch, registry_dir
):
    promotion = promote(experiment, "nsmc")
    needed = sum(f.stat().st_size for f in registry.serving_files(Path(promotion.path)))
    disk = small_disk(needed / 2 / MB)
    monkeypatch.setenv("CAVIAR_REGISTRY", str(disk))
    proc = cli("promote", experiment, "--name", "nsmc")
    assert proc.returncode == 2 and "the registry is unchanged" in one_line(proc) and "this needs about" in proc.stderr
    monkeypatch.setattr("caviar.registry.promote.check_room", lambda *args: None)  # now the copy itself fills it
    proc = cli("promote", experiment, "--name", "nsmc")
    assert proc.returncode == 2 and f"no space left on {disk}/nsmc:" in one_line(proc)
    assert sorted(p.name for p in (disk / "nsmc").iterdir()) == [".lock"]  # no version, no leftover, no current
    assert json.loads((registry_dir / "nsmc" / "current" / "model_card.json").read_text())["version"] == "v1"
    assert os.path.realpath(registry_dir / "nsmc" / "current").endswith("v1")
