"""The outcome of a tuning run (caviar_tune.json), read back from disk: best trial, per-trial table,
disk use; and what to print. `caviar report` is the fuller, re-runnable view of the same folder.

Runs only once every trial has ended; an interrupted run raises Interrupted instead.
"""

from __future__ import annotations

import json
import shlex
import shutil
import sys
from pathlib import Path

from caviar.experiment.record import OUTCOME_FILE, ROUNDS_FILE, Experiment
from caviar.job.schema import JobSpec
from caviar.tuning.search_space import flatten
from model.errors import UserError
from model.files import write_json_atomically


class Interrupted(Exception):
    """The run stopped before its trials finished (Ctrl+C); the experiment can be resumed."""

    def __init__(self, experiment_dir: Path):
        super().__init__(f"interrupted; continue with: caviar resume {experiment_dir}")
        self.experiment_dir = experiment_dir


def finish(job: JobSpec, experiment_dir: Path, wall_s: float) -> dict:
    """Summarize from disk; prune checkpoints only once every trial has ended."""
    experiment = Experiment.load(experiment_dir, job)
    if experiment.interrupted:
        raise Interrupted(experiment_dir)
    freed = experiment.prune(job.checkpoint.keep_best_trials)
    trials = experiment.trials()
    total_bytes, largest = experiment.checkpoint_bytes()
    best = experiment.best()
    if best is None:
        errors = [t.error for t in trials if t.error]
        raise UserError(f"no trial reported {job.metric}; first error: {errors[0] if errors else 'none recorded'}")
    trial, row = best
    checkpoint = experiment.best_checkpoint(trial)
    row = _row_of_checkpoint(trial, checkpoint, row, job.metric)
    bound = (job.checkpoint.keep_best_trials or len(trials)) + (job.max_concurrent_trials or len(trials))
    outcome = {
        "experiment_dir": str(experiment_dir),
        "best_trial": trial.trial_id,
        "best_config": trial.params,
        f"best_{job.metric}": float(row[job.metric]),
        "best_val_accuracy": float(row["val_accuracy"]),
        "best_evaluation": int(row["training_iteration"]),
        "best_checkpoint": str(checkpoint),
        "trials": [_trial_row(t, job) for t in trials],
        "stopped_early": sum(t.stopped_early for t in trials),
        "cut_by_budget": sum(t.cut_by_budget for t in trials),
        "errored": sum(t.status == "ERROR" for t in trials),
        "wall_s": wall_s,
        "checkpoint_bytes": total_bytes,
        "checkpoint_bytes_bound": bound * largest,
        "checkpoint_bytes_freed": freed,
    }
    if job.model.pretrained:
        outcome["pretrained"] = job.model.pretrained
    if (lineage := experiment_dir / ROUNDS_FILE).is_file():
        outcome["rounds"] = json.loads(lineage.read_text(encoding="utf-8"))
    write_json_atomically(experiment_dir / OUTCOME_FILE, outcome)
    return outcome


def _trial_row(trial, job: JobSpec) -> dict:
    best = trial.best_row(job.metric, job.mode)
    return {
        "trial_id": trial.trial_id,
        "status": trial.status,
        "evaluations": trial.evaluations,
        f"best_{job.metric}": None if best is None else float(best[job.metric]),
        "stopped_early": trial.stopped_early,
        "cut_by_budget": trial.cut_by_budget,
        "round": trial.round,
        "params": trial.params,
        **({"error": trial.error} if trial.error else {}),
    }


def _row_of_checkpoint(trial, checkpoint, row, metric: str):
    """On a tie, name the evaluation whose checkpoint was kept, so the figures and the files agree."""
    if checkpoint is None:
        return row
    step = trial.checkpoint_metrics(checkpoint).get("step")
    match = trial.history[trial.history["step"] == step]
    return match.iloc[0] if len(match) and match.iloc[0][metric] == row[metric] else row


def describe_best(summary: dict, metric: str) -> list[str]:
    return [
        f"best trial {summary['best_trial']}: {metric} {summary[f'best_{metric}']:.4f} "
        f"at evaluation {summary['best_evaluation']}",
        "  " + ", ".join(f"{k}={_short(v)}" for k, v in flatten(summary["best_config"]).items()),
        f"  checkpoint: {summary['best_checkpoint']}",
        *([f"  fine-tuned from: {summary['pretrained']}"] if summary.get("pretrained") else []),
        f"{len(summary['trials'])} trials, {summary['stopped_early']} stopped early, "
        + (f"{cut} cut by the time budget, " if (cut := summary.get("cut_by_budget")) else "")
        + f"{summary['errored']} errored, "
        f"{summary['wall_s']:.0f}s; checkpoints on disk {summary['checkpoint_bytes'] / 2**20:.1f} MiB",
        f"experiment: {summary['experiment_dir']}",
        "next:",
        f"  compare trials:  {runnable('tensorboard')} --logdir {shlex.quote(summary['experiment_dir'])}",
        f"  leaderboard:     {runnable('caviar')} report {shlex.quote(summary['experiment_dir'])}",
        f"  promote best:    {runnable('caviar')} promote {shlex.quote(summary['experiment_dir'])}",
    ]


def runnable(command: str) -> str:
    """The command as it runs from this shell: its bare name when the PATH finds this environment's
    copy, else its path inside this environment (a venv that was never activated)."""
    here = Path(sys.executable).parent / command
    found = shutil.which(command)
    if here.is_file() and (found is None or Path(found).resolve() != here.resolve()):
        return shlex.quote(str(here))
    return command


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
