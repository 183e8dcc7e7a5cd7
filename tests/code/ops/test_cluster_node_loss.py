"""Losing a worker node mid-search: its trial is retried on the head, and the job still succeeds.

A module of its own, so that test_cluster.py's cluster is down while this one runs. An idle local.sh
cluster's daemons, at nice 0, took about 8 CPU-seconds a minute here, and on a 2-CPU machine they come
before the trials, which Ray runs at nice 15.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from caviar.experiment.record import load_trials
from caviar.ops.cluster import TERMINAL
from tests.code.ops.ray_cluster import Cluster, caviar, nodes_reported, running_cluster, the_experiment
from tests.conftest import TRIAL_START_TIMEOUT_S

pytestmark = pytest.mark.slow

FINISH_TIMEOUT_S = TRIAL_START_TIMEOUT_S  # the retried trial restarts a worker, at nice 15 too


@pytest.fixture
def own_cluster():
    """A cluster of the test's own: the test kills one of its nodes."""
    with running_cluster() as up:
        yield up


def test_losing_a_worker_node_retries_its_trials_on_the_head(own_cluster, cluster_job, tmp_path):
    # 80 evaluations a trial: long enough to lose the node mid-trial. One trial per node: after the
    # loss the head runs the rest alone, so two more trials would only add their run time.
    job = cluster_job({"num_samples": 2}, epochs=40)
    proc = caviar("submit", job, "--address", own_cluster.address, env=own_cluster.env)
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.split("submitted ")[1].split()[0]
    worker = own_cluster.worker_raylet_pid()
    wait_for_reports_from_both_nodes(own_cluster, job_id, tmp_path / "shared")  # one trial runs on the worker
    os.kill(worker, signal.SIGKILL)

    status = own_cluster.wait_for_job(job_id, FINISH_TIMEOUT_S)
    assert status == "SUCCEEDED", f"job {status} after losing the worker\n" + own_cluster.job_state(job_id)
    listed = caviar("jobs", "list", "--address", own_cluster.address, "--json", env=own_cluster.env)
    assert [j["status"] for j in json.loads(listed.stdout) if j["id"] == job_id] == ["SUCCEEDED"]
    trials = load_trials(the_experiment(tmp_path))
    assert all(t.status == "TERMINATED" for t in trials)
    assert len({n for t in trials for n in t.history["node_id"]}) == 2
    moved = [t for t in trials if t.history["node_id"].nunique() == 2]
    assert moved, "the trial running on the lost worker must have been retried on the head"
    assert all(t.history["node_id"].iloc[-1] != t.history["node_id"].iloc[0] for t in moved)


def wait_for_reports_from_both_nodes(cluster: Cluster, job_id: str, shared: Path) -> None:
    """Until a trial has reported from each node; a job that ends first fails at once, with why."""
    deadline = time.time() + TRIAL_START_TIMEOUT_S
    next_status_check = 0.0
    while time.time() < deadline:
        if len(nodes_reported(shared)) == 2:
            return
        if time.time() >= next_status_check:
            if (status := cluster.job_status(job_id)) in TERMINAL:
                pytest.fail(f"job {status} before both nodes reported\n" + cluster.job_state(job_id))
            next_status_check = time.time() + 5
        time.sleep(0.2)
    seen = sorted(str(p.relative_to(shared.parent)) for p in shared.rglob("*"))[:40]
    waited = f"no reports from both nodes within {TRIAL_START_TIMEOUT_S} s; storage holds {seen}\n"
    pytest.fail(waited + cluster.job_state(job_id))
