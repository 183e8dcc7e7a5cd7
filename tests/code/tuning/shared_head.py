"""One Ray head per pytest worker, for the tuner tests whose driver ends by itself: their `caviar
tune` joins it through RAY_ADDRESS, as a user's does on a cluster, instead of starting and stopping
a Ray of its own (about 8 s of each run's 21 s on this machine). A test that kills its driver
together with the Ray it started still lets the driver start its own.

The head has its own token, ports and temp folder (so `ray.init()` elsewhere never finds it). It is
laid out as cluster/local.sh lays out a cluster (`<state>/ray`), so `local.sh down` stops exactly
its processes: `ray stop` would stop every Ray on the machine.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

PROJECT = Path(__file__).parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def shared_head() -> Iterator[dict[str, str]]:
    """A head with this machine's CPUs; yields the environment a driver joins it with."""
    state = tempfile.mkdtemp(prefix="cvh", dir="/tmp")  # short: Ray's socket paths are length-limited
    port = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    ray = Path(sys.executable).with_name("ray")
    command = [ray, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port)]
    command += ["--ray-client-server-port", str(free_port())]  # not the fixed 10001 each head would take
    command += ["--num-cpus", str(os.cpu_count()), "--num-gpus", "0", "--include-dashboard=false"]
    command += ["--disable-usage-stats", "--temp-dir", f"{state}/ray"]
    try:
        started = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert started.returncode == 0, f"the shared Ray head did not start:\n{started.stderr[-3000:]}"
        yield {**env, "RAY_ADDRESS": f"127.0.0.1:{port}"}
    finally:
        down = {**env, "CAVIAR_CLUSTER_DIR": state, "RAY_HEAD_PORT": str(port)}
        subprocess.run(["bash", PROJECT / "cluster" / "local.sh", "down"], env=down, capture_output=True, timeout=60)
        shutil.rmtree(state, ignore_errors=True)
