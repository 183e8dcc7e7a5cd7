"""Every tuner test checks that no Ray process it started outlives it (tests/ray_processes.py), and
the ones whose driver ends by itself share this worker's Ray head (shared_head.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import time

import pytest

from tests.code.tuning.shared_head import shared_head
from tests.ray_processes import ray_processes


@pytest.fixture(scope="session")
def ray_head() -> dict[str, str]:
    """The environment a `caviar tune` or `caviar resume` joins this worker's shared head with."""
    with shared_head() as env:
        yield env


@pytest.fixture(autouse=True)
def no_ray_left_behind(ray_head):
    before = ray_processes()  # the shared head is up before, and stays up after
    yield
    deadline = time.time() + 30
    while (left := ray_processes() - before) and time.time() < deadline:
        time.sleep(1)
    for pid in left:  # a test that failed midway must not leak a cluster into the next one
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"Ray processes left behind: {left}"
