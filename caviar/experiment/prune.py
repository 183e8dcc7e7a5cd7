"""Checkpoint disk use: after a job, one checkpoint per trial, and only for the K best trials.

Ray's num_to_keep is per trial, so a 64-trial job keeps 64+ checkpoints and disks fill up;
`Experiment.prune` bounds the total to (keep_best_trials + max_concurrent_trials) checkpoints,
deciding which to keep by its ranking; this module only measures and deletes.
"""

from __future__ import annotations

import shutil
from pathlib import Path


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())


def checkpoint_bytes(checkpoints: list[Path]) -> tuple[int, int]:
    """(total bytes of the checkpoints, bytes of the largest one)."""
    sizes = [folder_bytes(c) for c in checkpoints]
    return sum(sizes), max(sizes, default=0)


def remove_all_but(checkpoints: list[Path], keep: Path | None) -> int:
    """Delete every checkpoint folder except `keep`; returns the bytes freed."""
    freed = 0
    for folder in checkpoints:
        if folder != keep:
            freed += folder_bytes(folder)
            shutil.rmtree(folder, ignore_errors=True)
    return freed
