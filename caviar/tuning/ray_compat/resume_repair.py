"""A killed driver's experiment, made resumable: the saved state may name a checkpoint Ray deleted,
or one older than the trial's recorded results.

Upstream: ray-project/ray#27790 (FileNotFoundError when resuming from a checkpoint). Ray deletes a
trial's older checkpoint the moment a newer one arrives, but snapshots the experiment state only
every ~10 s (ray.tune.execution.experiment_state); a driver killed in between leaves a state naming
a deleted checkpoint, and Ray would fail that trial on resume. The same lag leaves result.json
rows past the checkpoint the state names; Ray appends to result.json on resume, so the evaluations
re-run from that checkpoint would appear twice. Canary: test_ray_compat checks the snapshot period
is still throttled that way.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from caviar.experiment.object_store import holds_checkpoint
from caviar.experiment.record import TrialRecord
from caviar.experiment.trial_record import RESUMED, up_to_step
from model.files import write_text_atomically

RESULT_ROWS, PROGRESS_CSV = "result.json", "progress.csv"  # Ray's per-trial histories


@dataclass
class ResumePlan:
    moved: list[str]  # stale checkpoint references repaired, as "trial: from -> to"
    replay: dict[str, int]  # trial -> the last step result.json holds (-1: none), where its checkpoint is past it
    cut: list[str]  # trials whose recorded rows past their checkpoint were dropped, to be re-run once


def _unchanged(_folder: Path):
    return contextlib.nullcontext()


def prepare_resume(
    trials: list[TrialRecord],
    rename: Callable[[Path, Path], None] = Path.rename,
    pushed: Callable[[Path], contextlib.AbstractContextManager] = _unchanged,
) -> ResumePlan:
    """Make a killed driver's experiment resumable, and say which trials must re-report.

    The trial's newest complete checkpoint is moved into the folder the state names: it resumes
    from where it really got to. The trial's history then ends at that checkpoint's evaluation:
    rows recorded after it are dropped (the trial runs them again, once), and rows lost before it
    are reported again from the checkpoint's own history (`replay`). So no evaluation appears twice
    and none is missing. `pushed(folder)`: on object storage, files rewritten there reach the store.
    """
    moved, replay, cut = [], {}, []
    for trial in trials:
        wanted = trial.resume_from
        if trial.status not in RESUMED:  # an errored trial resumes from its checkpoint too
            continue
        if wanted is not None and not wanted.is_dir():
            complete = [c for c in trial.checkpoints() if holds_checkpoint(c)]  # a mirror's too
            if not complete:
                continue
            rename(complete[-1], wanted)  # on object storage, on the store as well
            moved.append(f"{trial.trial_id}: {complete[-1].name} -> {Path(wanted).name}")
        step = trial.resume_step  # 0: no checkpoint, so it starts over and reports every row again
        if step is None:
            continue
        recorded = list(trial.history["step"]) if "step" in trial.history else []
        if any(s > step for s in recorded) or (step == 0 and len(trial.history)):
            with pushed(trial.path):
                _cut_history(trial, step)
            cut.append(trial.trial_id)
            recorded = [s for s in recorded if s <= step]
        if step and step not in recorded:
            # On object storage, result.json may be older than the state by several evaluations (the
            # driver's upload was cut): every evaluation after its last row is reported again.
            replay[trial.trial_id] = int(max(recorded, default=-1))
    return ResumePlan(moved, replay, cut)


def _cut_history(trial: TrialRecord, step: int) -> None:
    """Ray's two histories of the trial, and the record's, end at `step`; each file written whole."""
    rows_file, csv_file = trial.path / RESULT_ROWS, trial.path / PROGRESS_CSV
    if rows_file.is_file():
        lines = [line for line in rows_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        kept = [line for line in lines if step and json.loads(line).get("step", step) <= step]
        write_text_atomically(rows_file, "".join(line + "\n" for line in kept))
    if csv_file.is_file() and csv_file.stat().st_size:
        write_text_atomically(csv_file, up_to_step(pd.read_csv(csv_file), step).to_csv(index=False))
    trial.history = up_to_step(trial.history, step)
