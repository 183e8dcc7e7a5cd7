"""Cluster checks against a real Ray cluster on loopback: a head and a worker node (1 CPU each),
started by cluster/local.sh and always stopped in teardown.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from caviar.experiment import load_trials
from tests.code.test_tune import ray_processes
from tests.conftest import TINY

pytestmark = pytest.mark.slow
PROJECT = Path(__file__).parents[2]
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

    def worker_raylet_pid(self) -> int:
        # local.sh gives node i the node-manager port head_port + 1000 + 100 * i
        port = self.head_port + 1100
        out = subprocess.run(["pgrep", "-f", f"raylet.*--node_manager_port={port}"], capture_output=True, text=True)
        return int(out.stdout.split()[0])


def free_base_port() -> int:
    """A head port whose whole block (head..head+1299) is free right now."""
    for _ in range(50):
        base = 20000 + secrets.randbelow(20000)
        ports = [base, base + 1, base + 2, *range(base + 1000, base + 1300, 7)]
        try:
            for port in ports:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no free port block")


@pytest.fixture(scope="module")
def cluster():
    """One cluster for the tests that leave it whole (its start and stop take ~20 s)."""
    with running_cluster() as up:
        yield up


@pytest.fixture
def own_cluster():
    """A cluster of the test's own, for a test that kills one of its nodes."""
    with running_cluster() as up:
        yield up


@contextlib.contextmanager
def running_cluster():
    state = tempfile.mkdtemp(prefix="cv", dir="/tmp")  # short: Ray's socket paths are length-limited
    head_port = free_base_port()
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
        subprocess.run(["bash", *local, "up", "1"], env=env, check=True, capture_output=True, timeout=120)
        yield Cluster(f"http://127.0.0.1:{head_port + 2000}", env, head_port, Path(state))
    finally:
        subprocess.run(["bash", *local, "down"], env=env, capture_output=True, timeout=60)
        shutil.rmtree(state, ignore_errors=True)
        deadline = time.time() + 20
        while ray_processes() - before and time.time() < deadline:
            time.sleep(0.5)
        assert not ray_processes() - before, "cluster/local.sh down left Ray processes behind"


def job_file(tmp_path: Path, tune: dict | None = None, **train) -> Path:
    """Jobs are uploaded with the project, so the file must live inside it."""
    spec = {**TINY, "train": {**TINY["train"], **train}, "storage": str(tmp_path / "shared"), **TUNE, **(tune or {})}
    path = PROJECT / "tune_jobs" / f"_test_{tmp_path.name}.yaml"
    path.write_text(yaml.safe_dump(spec, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture
def cluster_job(tmp_path):
    paths = []

    def make(tune: dict | None = None, **train) -> Path:
        paths.append(job_file(tmp_path, tune, **train))
        return paths[-1]

    yield make
    for path in paths:
        path.unlink(missing_ok=True)


def caviar(*args, env, timeout=300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", "from caviar.cli import main; main()", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=PROJECT)


def crash_lines(output: str) -> str:
    """What a native crash says before its stack trace (the trace alone fills any tail)."""
    marks = ("Check failed", "SIG", "***", "Error", "error:", "Traceback", "Fatal")
    return "\n".join(ln[:300] for ln in output.splitlines() if any(m in ln for m in marks))[:4000] + "\n"


def the_experiment(tmp_path: Path) -> Path:
    (experiment,) = [p for p in (tmp_path / "shared").iterdir() if p.is_dir()]
    return experiment


def test_submit_runs_on_both_nodes_then_report_and_promote(cluster, cluster_job, tmp_path):
    proc = caviar("submit", cluster_job(), "--address", cluster.address, "--follow", env=cluster.env)
    if proc.returncode != 0:
        pytest.fail(crash_lines(proc.stdout) + proc.stdout[-3000:] + proc.stderr[-2000:] + cluster.log_crashes())
    assert "SUCCEEDED" in proc.stdout
    # issue 9.27: Ray's packaging INFO lines stay out of caviar's own output
    assert not [ln for ln in proc.stderr.splitlines() if " INFO " in ln or "packag" in ln.lower()], proc.stderr
    experiment = the_experiment(tmp_path)
    trials = load_trials(experiment)
    assert len(trials) == 4 and all(t.status == "TERMINATED" for t in trials)
    nodes = {node for t in trials for node in t.history["node_id"]}
    assert len(nodes) == 2, f"trials ran on {nodes}"

    listed = caviar("jobs", "list", "--address", cluster.address, "--json", env=cluster.env)
    assert [j["status"] for j in json.loads(listed.stdout)] == ["SUCCEEDED"]
    env = {**cluster.env, "CAVIAR_REGISTRY": str(tmp_path / "registry")}
    assert caviar("report", experiment, env=env).returncode == 0
    promoted = caviar("promote", experiment, "--name", "nsmc", "--json", env=env)
    assert promoted.returncode == 0, promoted.stderr
    assert json.loads(promoted.stdout.strip().splitlines()[-1])["version"] == "v1"


def test_a_wrong_token_is_a_clear_error(cluster, cluster_job):
    env = {**cluster.env, "RAY_AUTH_TOKEN": "not-the-token"}
    proc = caviar("submit", cluster_job(), "--address", cluster.address, env=env)
    assert proc.returncode == 2
    assert f"the Ray cluster at {cluster.address} rejected the auth token" in proc.stderr
    assert "Traceback" not in proc.stderr
    missing = {k: v for k, v in cluster.env.items() if k != "RAY_AUTH_TOKEN"}
    missing["RAY_AUTH_TOKEN_PATH"] = "/nonexistent/token"
    proc = caviar("jobs", "list", "--address", cluster.address, env=missing)
    assert proc.returncode == 2 and "no Ray auth token" in proc.stderr


def test_losing_a_worker_node_retries_its_trials_on_the_head(own_cluster, cluster_job, tmp_path):
    # 80 evaluations a trial: long enough to lose the node mid-trial. One trial per node: after the
    # loss the head runs the rest alone, so two more trials would only add their run time.
    job = cluster_job({"num_samples": 2}, epochs=40)
    proc = caviar("submit", job, "--address", own_cluster.address, env=own_cluster.env)
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.split("submitted ")[1].split()[0]
    worker = own_cluster.worker_raylet_pid()
    wait_for_both_nodes(tmp_path / "shared", timeout=180)  # a trial is now running on the worker
    os.kill(worker, signal.SIGKILL)

    deadline = time.time() + 400
    status = ""
    while time.time() < deadline and status not in ("SUCCEEDED", "FAILED", "STOPPED"):
        time.sleep(2)
        listed = caviar("jobs", "list", "--address", own_cluster.address, "--json", env=own_cluster.env)
        status = next(j["status"] for j in json.loads(listed.stdout) if j["id"] == job_id)
    logs = caviar("jobs", "logs", job_id, "--address", own_cluster.address, env=own_cluster.env).stdout
    assert status == "SUCCEEDED", logs[-3000:]
    trials = load_trials(the_experiment(tmp_path))
    assert all(t.status == "TERMINATED" for t in trials)
    assert len({n for t in trials for n in t.history["node_id"]}) == 2
    moved = [t for t in trials if t.history["node_id"].nunique() == 2]
    assert moved, "the trial running on the lost worker must have been retried on the head"
    assert all(t.history["node_id"].iloc[-1] != t.history["node_id"].iloc[0] for t in moved)


def wait_for_both_nodes(shared: Path, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        nodes = set()
        for result in shared.glob("*/*/result.json"):
            with contextlib.suppress(OSError, ValueError):
                nodes |= {json.loads(line)["node_id"] for line in result.read_text().splitlines() if line.strip()}
        if len(nodes) == 2:
            return
        time.sleep(0.2)
    raise AssertionError(f"no reports from both nodes within {timeout}s")


def test_cluster_configs_parse_with_their_required_keys():
    aws = yaml.safe_load((PROJECT / "cluster" / "aws.yaml").read_text())
    assert {"cluster_name", "provider", "available_node_types", "head_node_type", "setup_commands"} <= set(aws)
    assert any(t["resources"].get("GPU", 0) >= 1 for t in aws["available_node_types"].values())
    assert any("requirements.txt" in c for c in aws["setup_commands"])
    assert all("RAY_AUTH_MODE=token" in c for c in aws["head_start_ray_commands"] if "ray start" in c)
    job = yaml.safe_load((PROJECT / "cluster" / "kuberay-rayjob.yaml").read_text())
    assert job["kind"] == "RayJob" and job["spec"]["shutdownAfterJobFinishes"] is True
    assert "caviar tune" in job["spec"]["entrypoint"]
    workers = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert any(
        "nvidia.com/gpu" in c["resources"]["limits"] for g in workers for c in g["template"]["spec"]["containers"]
    )
