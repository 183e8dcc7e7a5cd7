"""Issue 51, item 1: a tune with `tracking.mlflow` logs, from the driver, through a real `mlflow
server` on loopback: one parent run per experiment and one child run per trial, whose parameters
and evaluations match the leaderboard, and whose run the version promoted from it links to; and a
server that does not answer stops the run before it starts, in one line."""

from __future__ import annotations

import pytest

from caviar.ops.local_store import free_port
from tests.code.tuning.tune_runs import TUNE, run_caviar, summary_of
from tests.conftest import tiny_job_yaml

pytestmark = pytest.mark.slow


def test_a_tune_with_tracking_logs_every_trial_and_evaluation_to_mlflow(tmp_path, ray_head, mlflow_uri):
    from mlflow.tracking import MlflowClient

    spec = {**TUNE, "num_samples": 3, "max_concurrent_trials": 1}
    job = tiny_job_yaml(
        tmp_path / "job.yaml",
        name="tracked",
        storage=str(tmp_path / "results"),
        tracking={"mlflow": mlflow_uri},
        **spec,
    )
    proc = run_caviar("tune", job, "--name", "t", "--json", env=ray_head)
    summary = summary_of(proc)
    assert f"logged to {mlflow_uri}" in proc.stderr, proc.stderr[-2000:]

    client = MlflowClient(mlflow_uri)
    experiment = client.get_experiment_by_name("tracked")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.run_name == "t" and parent.info.status == "FINISHED"
    assert parent.data.params["num_samples"] == "3" and parent.data.tags["caviar.best_trial"] == summary["best_trial"]
    assert parent.data.metrics["best_val_accuracy"] == pytest.approx(summary["best_val_accuracy"])
    children = {
        r.data.tags["caviar.trial_id"]: r for r in runs if r is not parent and r.info.run_id != parent.info.run_id
    }
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children.values())
    assert set(children) == {t["trial_id"] for t in summary["trials"]}
    for trial in summary["trials"]:
        run = children[trial["trial_id"]]
        assert run.data.params == {k: str(v) for k, v in trial["params"].items()}
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        assert sorted(m.step for m in history) == list(range(1, trial["evaluations"] + 1))
        assert max(m.value for m in history) == pytest.approx(trial["best_val_accuracy"])
        assert (
            run.data.tags["caviar.state"] == trial["status"]
            and run.data.tags["caviar.checkpoint"] == trial["checkpoint"]
        )
        assert run.data.tags["caviar.stopped_early"] == str(trial["stopped_early"])

    # promoted into MLflow's registry on the same server, the version links to its trial's run
    registry = {"CAVIAR_REGISTRY": f"mlflow:{mlflow_uri}", "CAVIAR_CACHE": str(tmp_path / "cache")}
    promoted = run_caviar("promote", summary["experiment_dir"], "--name", "tracked", env={**ray_head, **registry})
    assert promoted.returncode == 0, promoted.stderr[-2000:]
    version = client.get_model_version("tracked", "1")
    assert version.run_id == children[summary["best_trial"]].info.run_id
    assert version.tags["caviar.trial_id"] == summary["best_trial"]


def test_a_server_that_does_not_answer_stops_the_tune_before_it_starts(tmp_path, ray_head):
    nowhere = f"http://127.0.0.1:{free_port()}"
    job = tiny_job_yaml(tmp_path / "job.yaml", storage=str(tmp_path / "results"), tracking={"mlflow": nowhere}, **TUNE)
    proc = run_caviar("tune", job, "--name", "n", env=ray_head)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr[-2000:]
    assert proc.stderr.startswith(f"caviar: error: MLflow at {nowhere} did not answer")
    assert not (tmp_path / "results" / "n").exists()  # nothing was made
