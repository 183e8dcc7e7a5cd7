"""One Ray head per pytest worker, for the tuner tests whose driver ends by itself: their `caviar
tune` joins it through RAY_ADDRESS, as a user's does on a cluster, instead of starting and stopping
a Ray of its own (about 8 s of each run's 21 s on this machine). A test that kills its driver
together with the Ray it started still lets the driver start its own.

The head has its own token, ports and temp folder (so `ray.init()` elsewhere never finds it), and
every process it starts inherits a marker, which is how it is stopped: `ray stop` would stop every
Ray on the machine.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

MARK = "CAVIAR_TEST_SHARED_HEAD"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def marked(marker: str) -> set[int]:
    """Live processes whose environment carries the marker (the head and all it started)."""
    found = set()
    needle = f"{MARK}={marker}".encode()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if needle in (proc / "environ").read_bytes().split(b"\0"):
                    found.add(int(proc.name))
    return found


def stop(marker: str, grace_s: float = 4.0) -> None:
    """SIGTERM, then SIGKILL what is left after `grace_s` (the GCS can sit on SIGTERM for 10 s)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in marked(marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.time() + grace_s
        while marked(marker) and time.time() < deadline:
            time.sleep(0.2)
        if not marked(marker):
            return


@contextlib.contextmanager
def shared_head() -> Iterator[dict[str, str]]:
    """A head with this machine's CPUs; yields the environment a driver joins it with."""
    state = tempfile.mkdtemp(prefix="cvh", dir="/tmp")  # short: Ray's socket paths are length-limited
    port, marker = free_port(), secrets.token_hex(8)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    ray = Path(sys.executable).with_name("ray")
    command = [ray, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port)]
    command += ["--num-cpus", str(os.cpu_count()), "--num-gpus", "0", "--include-dashboard=false"]
    command += ["--disable-usage-stats", "--temp-dir", f"{state}/ray"]
    try:
        started = subprocess.run(command, env={**env, MARK: marker}, capture_output=True, text=True, timeout=120)
        assert started.returncode == 0, f"the shared Ray head did not start:\n{started.stderr[-3000:]}"
        yield {**env, "RAY_ADDRESS": f"127.0.0.1:{port}"}
    finally:
        stop(marker)
        shutil.rmtree(state, ignore_errors=True)
