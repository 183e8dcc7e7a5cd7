"""The outcome of a tuning run (caviar_tune.json), read back from disk: best trial, per-trial rows,
disk use; and what to print. `caviar report` is the fuller, re-runnable view of the same folder.

Runs only once every trial has ended; an interrupted run raises Interrupted instead.
"""

from __future__ import annotations

import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from caviar.experiment.intervals import CONFIDENCE
from caviar.experiment.layout import OUTCOME_FILE, ROUNDS_FILE
from caviar.experiment.members import drop_group_checkpoints
from caviar.experiment.object_store import Mirror, is_uri, known_as, mirror_of
from caviar.experiment.record import Experiment
from caviar.experiment.reseed_record import ReseedRecord
from caviar.experiment.round_record import RoundRecord, rounds_of
from caviar.experiment.rows import TrialRow, trial_row
from caviar.experiment.selection import Standing, standings
from caviar.job.keys import flatten
from model.errors import UserError
from model.files import read_json, write_json_atomically
from model.settings import settings


class Interrupted(Exception):
    """The run stopped before its trials finished (Ctrl+C); the experiment can be resumed."""

    def __init__(self, experiment_dir: str | Path):
        super().__init__(f"interrupted; continue with: {runnable('caviar')} resume {shlex.quote(str(experiment_dir))}")
        self.experiment_dir = experiment_dir


@dataclass
class TuneOutcome:
    experiment_dir: str
    metric: str
    best_trial: str
    best_config: dict
    best_metric: float  # best_<metric> in JSON
    best_val_accuracy: float
    best_evaluation: int
    best_checkpoint: str
    trials: list[TrialRow]
    wall_s: float
    checkpoint_bytes: int
    checkpoint_bytes_bound: int
    checkpoint_bytes_freed: int
    pretrained: str | None = None
    rounds: list[RoundRecord] | None = None
    reseed: ReseedRecord | None = None  # final: {seeds: S}: the seed re-runs (reseed/reseed.json)
    notes: list[str] = field(default_factory=list)  # warnings worth repeating at the end
    best_interval: list[float] | None = None  # best_metric's 95% interval, from the kept predictions
    tied_with_best: list[str] = field(default_factory=list)  # trials whose paired interval holds 0

    @property
    def stopped_early(self) -> int:
        return sum(t.stopped_early for t in self.trials)

    @property
    def cut_by_budget(self) -> int:
        return sum(t.cut_by_budget for t in self.trials)

    @property
    def errored(self) -> int:
        return sum(t.status == "errored" for t in self.trials)

    def as_json(self) -> dict:
        out = {
            "experiment_dir": self.experiment_dir,
            "metric": self.metric,
            "best_trial": self.best_trial,
            "best_config": self.best_config,
            f"best_{self.metric}": self.best_metric,
            "best_val_accuracy": self.best_val_accuracy,
            "best_evaluation": self.best_evaluation,
            "best_checkpoint": self.best_checkpoint,
            "trials": [t.as_json() for t in self.trials],
            "stopped_early": self.stopped_early,
            "cut_by_budget": self.cut_by_budget,
            "errored": self.errored,
            "wall_s": self.wall_s,
            "checkpoint_bytes": self.checkpoint_bytes,
            "checkpoint_bytes_bound": self.checkpoint_bytes_bound,
            "checkpoint_bytes_freed": self.checkpoint_bytes_freed,
            "best_interval": self.best_interval,
            "tied_with_best": self.tied_with_best,
            "confidence": CONFIDENCE,
        }
        if self.pretrained is not None:
            out["pretrained"] = self.pretrained
        if self.rounds is not None:
            out["rounds"] = [r.as_json() for r in self.rounds]
        if self.reseed is not None:
            out["reseed"] = self.reseed.as_json()
        return out

    def _interval(self) -> str:
        return "" if self.best_interval is None else " [{:.4f}, {:.4f}]".format(*self.best_interval)

    def _ties(self) -> str:
        if self.best_interval is None:
            return ""
        n = len(self.tied_with_best)
        told = "no trial is" if n == 0 else ("1 trial is" if n == 1 else f"{n} trials are")
        return f"; {told} tied with it (paired {CONFIDENCE:.0%})"

    def describe(self) -> list[str]:
        folder = shlex.quote(self.experiment_dir)
        return [
            f"best trial {self.best_trial}: {self.metric} {self.best_metric:.4f}{self._interval()} "
            f"at evaluation {self.best_evaluation}{self._ties()}",
            "  " + ", ".join(f"{k}={_short(v)}" for k, v in flatten(self.best_config).items()),
            f"  checkpoint: {self.best_checkpoint}",
            *([f"  fine-tuned from: {self.pretrained}"] if self.pretrained else []),
            f"{len(self.trials)} trials, {self.stopped_early} stopped early, "
            + (f"{self.cut_by_budget} cut by the time budget, " if self.cut_by_budget else "")
            + f"{self.errored} errored, "
            f"{self.wall_s:.0f}s; checkpoints {'on the store' if is_uri(self.experiment_dir) else 'on disk'} "
            f"{self.checkpoint_bytes / 2**20:.1f} MiB",
            *self.notes,
            *(self.reseed.describe() if self.reseed else []),
            f"experiment: {self.experiment_dir}",
            "next:",
            f"  compare trials:  {runnable('tensorboard')} --logdir {folder}",
            f"  leaderboard:     {runnable('caviar')} report {folder}",
            f"  promote best:    {runnable('caviar')} promote {folder}",
        ]


def finish(experiment: Experiment, wall_s: float, notes: list[str] | None = None) -> TuneOutcome:
    """Summarize an experiment read from disk; prune checkpoints only once every trial has ended."""
    job, experiment_dir = experiment.job, experiment.folder
    if experiment.interrupted:
        raise Interrupted(known_as(experiment_dir))
    freed = experiment.prune(job.checkpoint.keep_best_trials) + drop_group_checkpoints(experiment_dir)
    if (mirror := mirror_of(experiment_dir)) is not None:  # an experiment on object storage: prune it there
        mirror.drop_missing_checkpoints()
    trials = experiment.trials()
    standing = standings(experiment)  # after pruning: what a pruned trial keeps is its predictions
    total_bytes, largest = experiment.checkpoint_bytes()
    best = experiment.best()
    if best is None:
        errors = [t.error for t in trials if t.error]
        raise UserError(f"no trial reported {job.metric}; first error: {errors[0] if errors else 'none recorded'}")
    trial, row = best
    checkpoint = experiment.best_checkpoint(trial)
    row = _row_of_checkpoint(trial, checkpoint, row, job.metric)
    bound = (job.checkpoint.keep_best_trials or len(trials)) + (job.max_concurrent_trials or len(trials))
    lineage = experiment_dir / ROUNDS_FILE
    outcome = TuneOutcome(
        experiment_dir=known_as(experiment_dir),
        metric=job.metric,
        best_trial=trial.trial_id,
        best_config=trial.params,
        best_metric=float(row[job.metric]),
        best_val_accuracy=float(row["val_accuracy"]),
        best_evaluation=int(row["training_iteration"]),
        best_checkpoint=known_as(checkpoint) if checkpoint else "None",
        trials=[trial_row(t, job, standing.get(t.trial_id)) for t in trials],
        wall_s=wall_s,
        checkpoint_bytes=total_bytes,
        checkpoint_bytes_bound=bound * largest,
        checkpoint_bytes_freed=freed,
        pretrained=job.model.pretrained,
        rounds=rounds_of(read_json(lineage)) if lineage.is_file() else None,
        notes=list(notes or []),
        best_interval=_interval_of(standing.get(trial.trial_id)),
        tied_with_best=[tid for tid, st in standing.items() if st.tied],
    )
    save(outcome)
    return outcome


def _interval_of(standing: Standing | None) -> list[float] | None:
    return None if standing is None or standing.interval is None else standing.interval.as_list()


def save(outcome: TuneOutcome) -> None:
    """caviar_tune.json, written whole: in the folder, or as one object on the store."""
    if not is_uri(outcome.experiment_dir):
        write_json_atomically(Path(outcome.experiment_dir) / OUTCOME_FILE, outcome.as_json())
        return
    Mirror.of(outcome.experiment_dir).put_json(OUTCOME_FILE, outcome.as_json())


def _row_of_checkpoint(trial, checkpoint, row, metric: str):
    """On a tie, name the evaluation whose checkpoint was kept, so the figures and the files agree."""
    if checkpoint is None:
        return row
    step = trial.checkpoint_metrics(checkpoint).get("step")
    match = trial.history[trial.history["step"] == step]
    return match.iloc[0] if len(match) and match.iloc[0][metric] == row[metric] else row


def runnable(command: str) -> str:
    """The command as it runs from the user's shell: its bare name when the PATH finds this
    environment's copy, else its path inside this environment (a venv that was never activated). A
    job `caviar submit` sent to a cluster spells it with the submitting machine's copy, by full path."""
    if (client := settings().client_bin) is not None:
        return shlex.quote(str(client / command))
    here = Path(sys.executable).parent / command
    found = shutil.which(command)
    if here.is_file() and (found is None or Path(found).resolve() != here.resolve()):
        return shlex.quote(str(here))
    return command


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
