"""Checkpoint disk use: after a job, one checkpoint per trial, and only for the K best trials.

Ray's num_to_keep is per trial, so a 64-trial job keeps 64+ checkpoints and disks fill up;
this bounds the total to (keep_best_trials + max_concurrent_trials) checkpoints.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from caviar.experiment import TrialRecord


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())


def checkpoint_bytes(trials: list[TrialRecord]) -> tuple[int, int]:
    """(total bytes of all checkpoints, bytes of the largest single checkpoint)."""
    sizes = [folder_bytes(c) for t in trials for c in t.checkpoints()]
    return sum(sizes), max(sizes, default=0)


def prune(trials: list[TrialRecord], metric: str, mode: str, keep_best_trials: int | None) -> int:
    """Keep each trial's best checkpoint, and none for trials outside the best K; returns bytes freed."""
    freed = 0
    ranked = sorted(
        (t for t in trials if t.best_row(metric, mode) is not None),
        key=lambda t: t.best_row(metric, mode)[metric],
        reverse=mode == "max",
    )
    keep_trials = {t.trial_id for t in (ranked if keep_best_trials is None else ranked[:keep_best_trials])}
    for trial in trials:
        best = trial.best_checkpoint(metric, mode) if trial.trial_id in keep_trials else None
        for folder in trial.checkpoints():
            if folder != best:
                freed += folder_bytes(folder)
                shutil.rmtree(folder, ignore_errors=True)
    return freed
