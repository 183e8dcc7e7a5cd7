"""Issue 51, item 1: logging an experiment to MLflow continues where it left off. A resumed
experiment, logged again, adds only the evaluations it ran since, to the same runs: no metric step
is logged twice. A missing extra is one line."""

from __future__ import annotations

import builtins
import json
import shutil

import pytest

from caviar.experiment.job_record import load_job_of
from caviar.experiment.mlflow_tracking import client_for, track
from caviar.experiment.outcome import finish
from caviar.experiment.record import Experiment
from model.errors import UserError


def _logged(experiment_dir, uri):
    experiment = Experiment.load(experiment_dir, load_job_of(experiment_dir))
    return track(experiment, finish(experiment, 1.0), uri), experiment


def _steps(uri, run_ids) -> dict[str, list[int]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    return {run: sorted(m.step for m in client.get_metric_history(run, "val_loss")) for run in run_ids}


def test_logging_a_resumed_experiment_again_adds_only_what_it_ran_since(experiment, tmp_path):
    folder = shutil.copytree(experiment, tmp_path / "exp")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    longest = max(folder.glob("*/result.json"), key=lambda p: len(p.read_text().splitlines()))
    whole = longest.read_text()
    rows = whole.splitlines()
    assert len(rows) >= 2
    longest.write_text(rows[0] + "\n")  # as if the driver had been killed after its first evaluation

    first, _ = _logged(folder, uri)
    ledger = json.loads((folder / "caviar_mlflow.json").read_text())
    run_ids = [entry["run_id"] for entry in ledger["runs"].values()]
    before = _steps(uri, run_ids)

    longest.write_text(whole)  # resumed: the rest of its evaluations recorded
    second, experiment_after = _logged(folder, uri)
    third, _ = _logged(folder, uri)  # and once more, with nothing new
    after = _steps(uri, run_ids)

    assert (second.parent_run_id, second.experiment_id) == (first.parent_run_id, first.experiment_id)
    assert second.evaluations == len(rows) - 1 and third.evaluations == 0
    for trial in experiment_after.trials():
        run = ledger["runs"][trial.trial_id]["run_id"]
        assert after[run] == list(range(1, trial.evaluations + 1))  # each step once
    assert sum(map(len, after.values())) == sum(map(len, before.values())) + len(rows) - 1
    assert (tmp_path / "mlartifacts").is_dir()  # beside the database, not in the working folder


def test_a_missing_mlflow_extra_is_one_line(monkeypatch):
    real = builtins.__import__

    def without_mlflow(name, *args, **kwargs):
        if name.startswith("mlflow"):
            raise ImportError(f"No module named {name!r}")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_mlflow)
    with pytest.raises(UserError, match=r"^tracking to sqlite:///x.db needs MLflow: pip install 'caviar\[mlflow\]'$"):
        client_for("sqlite:///x.db")
