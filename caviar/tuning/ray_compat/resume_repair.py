"""A killed driver's experiment, made resumable: the saved state may name a checkpoint Ray deleted.

Upstream: ray-project/ray#27790 (FileNotFoundError when resuming from a checkpoint). Ray deletes a
trial's older checkpoint the moment a newer one arrives, but snapshots the experiment state only
every ~10 s (ray.tune.execution.experiment_state); a driver killed in between leaves a state naming
a deleted checkpoint, and Ray would fail that trial on resume. Canary: test_ray_compat checks the
snapshot period is still throttled that way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from caviar.experiment.object_store import holds_checkpoint
from caviar.experiment.record import UNFINISHED, TrialRecord


@dataclass
class ResumePlan:
    moved: list[str]  # stale checkpoint references repaired, as "trial: from -> to"
    replay: dict[str, int]  # trial -> the last step result.json holds (-1: none), where its checkpoint is past it


def prepare_resume(trials: list[TrialRecord], rename: Callable[[Path, Path], None] = Path.rename) -> ResumePlan:
    """Make a killed driver's experiment resumable, and say which trials must re-report.

    The trial's newest complete checkpoint is moved into the folder the state names: it resumes
    from where it really got to. Whether that checkpoint's evaluation was recorded (result.json)
    decides what the trial does on resume: report it again, with any before it that were lost, if it
    was not, never if it was, so no evaluation appears twice and a trial whose last evaluation was
    recorded is not run again.
    """
    moved, replay = [], {}
    for trial in trials:
        wanted = trial.resume_from
        if trial.status not in UNFINISHED or wanted is None:
            continue
        if not wanted.is_dir():
            complete = [c for c in trial.checkpoints() if holds_checkpoint(c)]  # a mirror's too
            if not complete:
                continue
            rename(complete[-1], wanted)  # on object storage, on the store as well
            moved.append(f"{trial.trial_id}: {complete[-1].name} -> {Path(wanted).name}")
        step = trial.checkpoint_metrics(wanted).get("step")
        recorded = list(trial.history["step"]) if "step" in trial.history else []
        if step is not None and step not in recorded:
            # On object storage, result.json may be older than the state by several evaluations (the
            # driver's upload was cut): every evaluation after its last row is reported again.
            replay[trial.trial_id] = int(max(recorded, default=-1))
    return ResumePlan(moved, replay)
