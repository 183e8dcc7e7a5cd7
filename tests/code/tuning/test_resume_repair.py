"""ray_compat/resume_repair: a state that names a checkpoint Ray deleted is repaired from the newest
one, on a mirror of an experiment on object storage too, where no checkpoint's weights are held
locally (they stay on the store until used); and a trial's recorded rows past the checkpoint it
resumes from are dropped, so the evaluations it runs again are recorded once."""

from __future__ import annotations

import json

import pandas as pd

from caviar.experiment.object_store import MANIFEST, holds_checkpoint
from caviar.experiment.record import TrialRecord
from caviar.tuning.ray_compat.resume_repair import prepare_resume


def test_a_stale_checkpoint_on_a_mirror_is_repaired_from_the_newest_one(tmp_path):
    mirror, trial = tmp_path / "exp", tmp_path / "exp" / "run_trial_a"
    newest = trial / "checkpoint_000001"
    newest.mkdir(parents=True)
    (newest / "caviar.json").write_text(json.dumps({"metrics": {"step": 23}}))
    left_out = {"run_trial_a/checkpoint_000001/model.safetensors": 10}
    manifest = {"uri": "s3://caviar/exp", "files": {}, "left_out": left_out}
    (mirror / MANIFEST).write_text(json.dumps(manifest))
    assert holds_checkpoint(newest) and not holds_checkpoint(trial / "checkpoint_000000")

    history = pd.DataFrame({"training_iteration": [1], "step": [12]})
    record = TrialRecord("a", "RUNNING", {}, trial, history, None, resume_from=trial / "checkpoint_000000")
    renamed = []

    def rename(source, dest):  # Mirror.rename_dir, less the store
        renamed.append((source.name, dest.name))
        source.rename(dest)

    plan = prepare_resume([record], rename)
    assert renamed == [("checkpoint_000001", "checkpoint_000000")]
    assert plan.replay == {"a": 12}  # the moved checkpoint's evaluation (step 23) was never recorded


def _experiment_with_rows(tmp_path, steps: list[int], checkpoints: dict[str, int]):
    """One trial's folder: result.json and progress.csv rows at `steps`, checkpoints named -> step."""
    trial = tmp_path / "exp" / "run_trial_a"
    trial.mkdir(parents=True)
    for name, step in checkpoints.items():
        (trial / name).mkdir()
        (trial / name / "caviar.json").write_text(json.dumps({"metrics": {"step": step}}))
        (trial / name / "model.safetensors").write_bytes(b"w")
    rows = [{"training_iteration": i, "step": s, "val_loss": 1 / i} for i, s in enumerate(steps, 1)]
    (trial / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pd.DataFrame(rows).to_csv(trial / "progress.csv", index=False)
    return trial, pd.DataFrame(rows)


def _steps_recorded(trial):
    rows = [json.loads(line) for line in (trial / "result.json").read_text().splitlines()]
    return [r["step"] for r in rows], list(pd.read_csv(trial / "progress.csv")["step"])


def test_rows_recorded_past_the_checkpoint_the_state_names_are_dropped_to_be_run_once(tmp_path):
    """The state lags result.json: it names checkpoint_000000 (step 20), the trial recorded step 40
    too. Resumed from step 20, the trial evaluates step 40 again; the old row would make it twice."""
    trial, history = _experiment_with_rows(tmp_path, [20, 40], {"checkpoint_000000": 20, "checkpoint_000001": 40})
    record = TrialRecord("a", "RUNNING", {}, trial, history, None, resume_from=trial / "checkpoint_000000")
    plan = prepare_resume([record])
    assert plan.cut == ["a"] and plan.moved == [] and plan.replay == {}
    assert _steps_recorded(trial) == ([20], [20]) and list(record.history["step"]) == [20]


def test_an_errored_trial_resumes_from_its_checkpoint_with_the_rows_after_it_dropped(tmp_path):
    """`caviar resume` resumes errored trials too (Ray's resume_errored): the store-outage test's
    trial failed after its second row reached the store but before its second checkpoint did. Left
    uncut, its iterations read [1, 2, 2, 3, ...] (seen once in CI): Ray re-ran step 40 from step 20."""
    trial, history = _experiment_with_rows(tmp_path, [20, 40], {"checkpoint_000000": 20})
    record = TrialRecord("a", "ERROR", {}, trial, history, None, resume_from=trial / "checkpoint_000000")
    plan = prepare_resume([record])
    assert plan.cut == ["a"] and record.resume_step == 20
    assert _steps_recorded(trial) == ([20], [20])


def test_a_finished_trial_keeps_every_row(tmp_path):
    trial, history = _experiment_with_rows(tmp_path, [20, 40], {"checkpoint_000000": 20})
    before = (trial / "result.json").read_bytes()
    record = TrialRecord("a", "TERMINATED", {}, trial, history, None, resume_from=trial / "checkpoint_000000")
    assert prepare_resume([record]) == prepare_resume([]) and record.resume_step is None
    assert (trial / "result.json").read_bytes() == before


def test_an_older_checkpoint_moved_into_a_deleted_slot_drops_the_rows_after_it(tmp_path):
    """Issue 47's case: the state names checkpoint_000002, deleted; the only checkpoint left holds
    step 20 while rows reach step 80. The trial resumes at step 20: rows 40..80 are run again, once."""
    trial, history = _experiment_with_rows(tmp_path, [20, 40, 60, 80], {"checkpoint_000000": 20})
    record = TrialRecord("a", "RUNNING", {}, trial, history, None, resume_from=trial / "checkpoint_000002")
    plan = prepare_resume([record])
    assert plan.moved == ["a: checkpoint_000000 -> checkpoint_000002"] and plan.cut == ["a"]
    assert _steps_recorded(trial) == ([20], [20]) and plan.replay == {}


def test_a_state_in_step_with_its_rows_is_left_as_it_is(tmp_path):
    trial, history = _experiment_with_rows(tmp_path, [20, 40], {"checkpoint_000001": 40})
    before = (trial / "result.json").read_bytes()
    record = TrialRecord("a", "RUNNING", {}, trial, history, None, resume_from=trial / "checkpoint_000001")
    plan = prepare_resume([record])
    assert (plan.moved, plan.cut, plan.replay) == ([], [], {})
    assert (trial / "result.json").read_bytes() == before


def test_a_trial_with_no_checkpoint_to_resume_from_starts_over_with_no_rows(tmp_path):
    """The store went away after a trial's first row reached it but before its checkpoint did: the
    state names no checkpoint, so Ray starts the trial over and appends to result.json. Without the
    cut its iterations read [1, 1, 2, ...] (seen once in five runs of the store-outage test)."""
    trial, history = _experiment_with_rows(tmp_path, [20], {})
    record = TrialRecord("a", "RUNNING", {}, trial, history, None, resume_from=None)
    plan = prepare_resume([record])
    assert plan.cut == ["a"] and plan.replay == {} and plan.moved == []
    assert (trial / "result.json").read_text() == "" and len(record.history) == 0
    assert "step" in pd.read_csv(trial / "progress.csv").columns  # the header stays: Ray appends below it


def test_a_pending_trial_with_nothing_recorded_is_left_alone(tmp_path):
    trial = tmp_path / "exp" / "run_trial_b"
    trial.mkdir(parents=True)
    record = TrialRecord("b", "PENDING", {}, trial, pd.DataFrame(), None, resume_from=None)
    assert prepare_resume([record]) == prepare_resume([])
