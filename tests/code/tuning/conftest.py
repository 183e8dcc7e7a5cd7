"""Every tuner test checks that no Ray process it started outlives it (tests/ray_processes.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import time

import pytest

from tests.ray_processes import ray_processes


@pytest.fixture(autouse=True)
def no_ray_left_behind():
    before = ray_processes()
    yield
    deadline = time.time() + 30
    while (left := ray_processes() - before) and time.time() < deadline:
        time.sleep(1)
    for pid in left:  # a test that failed midway must not leak a cluster into the next one
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"Ray processes left behind: {left}"
