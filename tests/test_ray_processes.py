"""The leak checks count only their own worker's Ray: a raylet started under another tag is not ours."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

from tests.ray_processes import TAG, ray_processes


def test_a_raylet_counts_only_under_the_tag_it_was_started_with(tmp_path):
    raylet = tmp_path / "raylet"  # a process named like Ray's, by copying sleep
    shutil.copy(shutil.which("sleep"), raylet)
    mine = subprocess.Popen([raylet, "60"])  # inherits this worker's tag
    other = subprocess.Popen([raylet, "60"], env={**os.environ, TAG: "another-worker"})
    untagged = subprocess.Popen([raylet, "60"], env={k: v for k, v in os.environ.items() if k != TAG})
    try:
        deadline = time.time() + 10
        while mine.pid not in ray_processes() and time.time() < deadline:
            time.sleep(0.05)  # the copy's name shows once it has exec'd
        assert mine.pid in ray_processes()
        assert other.pid not in ray_processes() and untagged.pid not in ray_processes()
        assert other.pid in ray_processes("another-worker")
    finally:
        for proc in (mine, other, untagged):
            proc.kill()
            proc.wait()
    assert not ray_processes() & {mine.pid, other.pid}, "a reaped process still counted"
