"""Cluster checks against a real Ray cluster on loopback: a head and a worker node (1 CPU each),
started by cluster/local.sh and always stopped in teardown. The node-loss test has a module of its own
(test_cluster_node_loss.py), so that this module's cluster is down while it runs.
"""

from __future__ import annotations

import json

import pytest
import yaml

from caviar.experiment.record import load_trials
from tests.code.ops.ray_cluster import PROJECT, caviar, crash_lines, running_cluster, the_experiment

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    """One cluster for the tests that leave it whole (its start and stop take ~20 s)."""
    with running_cluster() as up:
        yield up


def test_submit_runs_on_both_nodes_then_report_and_promote(cluster, cluster_job, tmp_path):
    # a deadline for a stuck job: trials starting (TRIAL_START_TIMEOUT_S), then 4 short ones on 2 nodes
    proc = caviar("submit", cluster_job(), "--address", cluster.address, "--follow", env=cluster.env, timeout=600)
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
    (row,) = json.loads(listed.stdout)
    assert row["status"] == "SUCCEEDED" and "success" in row["message"].lower(), row
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


def test_jobs_list_says_why_a_job_waits_or_failed(cli, monkeypatch):
    from caviar.ops import cluster as jobs_api

    rows = [
        {"id": "raysubmit_a", "status": "SUCCEEDED", "message": "Job finished successfully.", "start_time": 1},
        {"id": "raysubmit_b", "status": "PENDING", "message": "waiting for the runtime_env", "start_time": 2},
        {"id": "raysubmit_c", "status": "FAILED", "message": "exit code 2", "start_time": 3},
    ]
    monkeypatch.setattr(jobs_api, "list_jobs", lambda address: [{**r, "entrypoint": "python -m caviar"} for r in rows])
    lines = cli("jobs", "list", "--address", "http://127.0.0.1:1").stdout.splitlines()
    assert [ln.split()[0] for ln in lines] == ["raysubmit_a", "raysubmit_b", "waiting", "raysubmit_c", "exit"]
    assert lines[2].strip() == "waiting for the runtime_env" and lines[4].strip() == "exit code 2"


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
