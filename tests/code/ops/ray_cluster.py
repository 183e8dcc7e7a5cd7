"""A real Ray cluster on loopback for the cluster tests: a head and a worker node (1 CPU each),
started by cluster/local.sh, its own token and port block, and always stopped on exit.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from caviar.ops.cluster import TERMINAL
from tests.conftest import TINY
from tests.ray_processes import ray_processes

PROJECT = Path(__file__).parents[3]
TUNE = {
    "search_space": {"train.lr": {"loguniform": [1e-3, 1e-2]}},
    "scheduler": {"type": "fifo"},
    "num_samples": 4,
    "max_concurrent_trials": 2,
    "resources_per_trial": {"cpu": 1},
    "max_failures": 3,
    "seed": 1,
}


@dataclass
class Cluster:
    address: str
    env: dict
    head_port: int
    state: Path

    def log_crashes(self) -> str:
        """Crash lines from the cluster's own logs (raylets, workers, job drivers), read before
        teardown deletes them: a driver that dies natively says why only there."""
        found = []
        for log in sorted((self.state / "ray").glob("session_latest/logs/**/*")):
            if log.is_file() and log.suffix in (".log", ".err", ".out"):
                lines = crash_lines(log.read_text(errors="replace")).strip()
                if lines:
                    found.append(f"--- {log.name}\n{lines[:1500]}")
        return "\n".join(found)[-6000:] + "\n"

    def job_state(self, job_id: str) -> str:
        """Where a job stands, from the cluster's side: its status and message, the tail of its
        logs, and the tails of the setup logs that say why a job never started."""
        listed = caviar("jobs", "list", "--address", self.address, "--json", env=self.env)
        logs = caviar("jobs", "logs", job_id, "--address", self.address, env=self.env).stdout
        logs_dir = self.state / "ray" / "session_latest" / "logs"
        setup = []
        for pattern in ("runtime_env_setup-*.log", "runtime_env_agent.log", "job-driver-*.log", "dashboard_agent.log"):
            for log in sorted(logs_dir.glob(pattern)):
                setup.append(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:]))
        return (
            f"jobs: {listed.stdout.strip()[:1000]}\n--- job logs\n{logs[-2000:]}\n"
            + "\n".join(setup)[-5000:]
            + "\n"
            + self.log_crashes()
        )

    def job_status(self, job_id: str) -> str:
        """The job's status from the dashboard's REST API: a poll costs no Python start-up, which on a
        2-CPU machine would compete with the trials being watched."""
        request = urllib.request.Request(
            f"{self.address}/api/jobs/{job_id}", headers={"Authorization": f"Bearer {self.env['RAY_AUTH_TOKEN']}"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())["status"]

    def wait_for_job(self, job_id: str, timeout: float) -> str:
        """Poll until the job ends (or the deadline passes); returns the last status seen."""
        deadline = time.time() + timeout
        status = self.job_status(job_id)
        while status not in TERMINAL and time.time() < deadline:
            time.sleep(1)
            status = self.job_status(job_id)
        return status

    def worker_raylet_pid(self) -> int:
        # local.sh gives node i the node-manager port head_port + 1000 + 100 * i
        port = self.head_port + 1100
        out = subprocess.run(["pgrep", "-f", f"raylet.*--node_manager_port={port}"], capture_output=True, text=True)
        return int(out.stdout.split()[0])


def ephemeral_low() -> int:
    """The lowest port the kernel hands out for a bind to port 0 (Ray's random ports come from there)."""
    with contextlib.suppress(OSError, ValueError):
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    return 32768


def cluster_ports(base: int, nodes: int = 2) -> list[int]:
    """Every port cluster/local.sh gives a cluster whose head port is `base` (node i's block starts
    at base + 1000 + 100 * i: six agent and manager ports, then workers from +10 to +99)."""
    ports = [base, base + 2, base + 2000]  # GCS, Ray client server, dashboard
    for i in range(nodes):
        block = base + 1000 + 100 * i
        ports += [*range(block, block + 6), *range(block + 10, block + 100)]
    return ports


def free_base_port(nodes: int = 2) -> int:
    """A head port whose every port is free right now, below the kernel's ephemeral range: every
    other Ray on the machine (the shared test heads, a trial's own) takes its random ports from
    that range, so none of them can take one of this cluster's between this check and its start
    (a raylet whose agent port is taken dies, and `ray start` times out after 30 s)."""
    top = ephemeral_low() - 2000  # base + 2000, the dashboard's port and the highest, stays below it
    for _ in range(50):
        base = 20000 + secrets.randbelow(top - 20000)
        try:
            for port in cluster_ports(base, nodes):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no free port block")


@contextlib.contextmanager
def running_cluster(workers: int = 1, isolated: bool = False):
    """A head and worker nodes, up for the block (`isolated`: sharing no disk with the head); then
    `down` and a check that no Ray process is left."""
    state = tempfile.mkdtemp(prefix="cv", dir="/tmp")  # short: Ray's socket paths are length-limited
    head_port = free_base_port(workers + 1)
    env = {
        **os.environ,
        "CAVIAR_CLUSTER_DIR": state,
        "RAY_HEAD_PORT": str(head_port),
        "RAY_DASHBOARD_PORT": str(head_port + 2000),
        "CAVIAR_NODE_CPUS": "1",
        "RAY_AUTH_TOKEN": secrets.token_hex(16),  # this cluster's own token
    }
    before = ray_processes()
    local = [str(PROJECT / "cluster" / "local.sh")]
    try:
        command = ["bash", *local, "up", str(workers), *(["--isolated"] if isolated else [])]
        up = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert up.returncode == 0, f"local.sh up failed:\n{up.stderr[-3000:]}\n{startup_logs(Path(state))}"
        yield Cluster(f"http://127.0.0.1:{head_port + 2000}", env, head_port, Path(state))
    finally:
        subprocess.run(["bash", *local, "down"], env=env, capture_output=True, timeout=60)
        shutil.rmtree(state, ignore_errors=True)
        deadline = time.time() + 20
        while ray_processes() - before and time.time() < deadline:
            time.sleep(0.5)
        assert not ray_processes() - before, "cluster/local.sh down left Ray processes behind"


def startup_logs(state: Path) -> str:
    """The ends of the logs that say why a node did not start (read before teardown deletes them)."""
    found = []
    for log in sorted((state / "ray").glob("session_*/logs/*")):
        if log.is_file() and log.name.startswith(("raylet", "gcs_server", "dashboard_agent", "runtime_env_agent")):
            found.append(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-12:]))
    return "\n".join(found)[-6000:]


def job_file(tmp_path: Path, tune: dict | None = None, **train) -> Path:
    """Jobs are uploaded with the project, so the file must live inside it."""
    spec = {**TINY, "train": {**TINY["train"], **train}, "storage": str(tmp_path / "shared"), **TUNE, **(tune or {})}
    path = PROJECT / "tune_jobs" / f"_test_{tmp_path.name}.yaml"
    path.write_text(yaml.safe_dump(spec, allow_unicode=True), encoding="utf-8")
    return path


def caviar(*args, env, timeout=300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", "from caviar.cli.main import main; main()", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=PROJECT)


def crash_lines(output: str) -> str:
    """What a native crash says before its stack trace (the trace alone fills any tail)."""
    marks = ("Check failed", "SIG", "***", "Error", "error:", "Traceback", "Fatal")
    return "\n".join(ln[:300] for ln in output.splitlines() if any(m in ln for m in marks))[:4000] + "\n"


def the_experiment(tmp_path: Path) -> Path:
    (experiment,) = [p for p in (tmp_path / "shared").iterdir() if p.is_dir()]
    return experiment


def nodes_reported(shared: Path) -> set[str]:
    """The nodes that trials under this storage folder have reported from so far."""
    nodes = set()
    for result in shared.glob("*/*/result.json"):
        with contextlib.suppress(OSError, ValueError):
            nodes |= {json.loads(line)["node_id"] for line in result.read_text().splitlines() if line.strip()}
    return nodes
