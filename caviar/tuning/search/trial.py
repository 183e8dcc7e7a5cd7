"""What one Ray trial runs: the job's fixed values with the sampled ones laid over, then model.train.

Ray hands a checkpoint back after a crash (max_failures), a driver restart (caviar resume) or a
PBT exploit; training resumes from it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path

import ray
from ray import tune

from caviar.ops.allocator import purge_on_a_timer
from caviar.tuning.search.search_space import trial_config
from model.settings import settings
from model.train import train

# Testing hook: "<folder>:<n>" makes the first trial that reaches its n-th report raise once,
# so retries from the last checkpoint can be tested for real. Unset in normal use.
FAULT_ENV = "CAVIAR_INJECT_FAULT"


def run_trial(config: dict, *, base: dict, splits, cpus: float, replay: Mapping[str, int] | None = None) -> None:
    """`replay`: trial id -> the last step the driver recorded (-1: none), for the trials whose resume
    checkpoint holds evaluations past it (ray_compat.resume_repair)."""
    started = time.perf_counter()  # for `startup_s`: this trial's set-up until its first step
    purge_on_a_timer()  # a trial's worker process returns idle pages as the `caviar` command does
    logging.getLogger("ray.train").setLevel(logging.WARNING)  # one "checkpoint created" line per report
    cfg = trial_config(base, config)
    if cfg.train.num_threads is None:
        cfg.train.num_threads = max(1, int(cpus))
    fault = _FaultOnce.from_env()

    node_id = ray.get_runtime_context().get_node_id()  # which node ran it, for multi-node runs

    def report(metrics: dict, folder: Path | None) -> None:
        # The evaluation's own count, not Ray's counter, which restarts from the number the saved
        # state gave the checkpoint: a replayed evaluation keeps its number (Trainable.train keeps ours).
        counted = {"training_iteration": metrics["evaluation"]} if "evaluation" in metrics else {}
        checkpoint = tune.Checkpoint.from_directory(folder) if folder is not None else None
        tune.report({**metrics, **counted, "node_id": node_id}, checkpoint=checkpoint)
        if fault:
            fault.maybe_raise()

    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        train(cfg, splits=splits, report=report, started=started)
        return
    with checkpoint.as_directory() as folder:
        after = (replay or {}).get(tune.get_context().get_trial_id())
        train(cfg, splits=splits, report=report, resume_from=Path(folder), replay_after_step=after, started=started)


class _FaultOnce:
    def __init__(self, marker_dir: Path, after: int):
        self.marker, self.after, self.reports = marker_dir / "fault-injected", after, 0

    @classmethod
    def from_env(cls) -> _FaultOnce | None:
        spec = settings().inject_fault
        if not spec:
            return None
        folder, _, after = spec.rpartition(":")
        return cls(Path(folder), int(after))

    def maybe_raise(self) -> None:
        self.reports += 1
        if self.reports >= self.after and not self.marker.exists():
            try:
                self.marker.touch(exist_ok=False)
            except FileExistsError:
                return
            raise RuntimeError(f"injected fault after report {self.reports} ({FAULT_ENV})")
