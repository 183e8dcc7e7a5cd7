"""ray_compat/resume_repair on a mirror of an experiment on object storage, where no checkpoint's
weights are held locally (they stay on the store until used): a state that names a checkpoint Ray
deleted is still repaired from the newest one, as on a disk."""

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
