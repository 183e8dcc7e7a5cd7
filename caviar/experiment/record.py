"""An experiment folder read back from disk: its trials, their histories, statuses and checkpoints,
and the one ranking of them ("which trial is best").

Works after the driver has exited and on a copied folder. The tuner's rounds, the end-of-tune
outcome, `caviar resume`, `report`, `promote` and the seed re-runs all read an experiment through
`Experiment` and rank its trials with `Experiment.ranked`; nothing else ranks trials.
"""

from __future__ import annotations

import logging
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from caviar.experiment.job_record import load_job_of
from caviar.experiment.layout import BUDGET_FILE, round_dirs, round_of
from caviar.experiment.object_store import left_out_bytes
from caviar.job.keys import flatten
from caviar.job.schema import JobSpec
from model.checkpoint import META
from model.errors import UserError, short
from model.files import read_json_object
from model.predictions import Predictions

# A driver stopped by Ctrl+C or a kill leaves RUNNING/PENDING trials behind; a run that ended does not
# (synchronous HyperBand may leave the trials it stopped PAUSED).
UNFINISHED = ("RUNNING", "PENDING")


@dataclass
class TrialRecord:
    trial_id: str
    status: str  # TERMINATED, ERROR, RUNNING/PENDING/PAUSED (interrupted)
    params: dict  # sampled values by dotted key, e.g. {"train.lr": 3e-4}
    path: Path
    history: pd.DataFrame  # one row per evaluation
    error: str | None
    round: int = 1
    resume_from: Path | None = None  # the checkpoint Ray's saved state would restore this trial from
    cut_by_budget: bool = False  # still live when the job's time_budget_s ran out
    max_t: int | None = None  # the scheduler's last rung: a trial that reached it was not stopped early
    damage: list[str] = field(default_factory=list)  # one line per damaged checkpoint passed over
    group: str | None = None  # a fused member's group: the Ray trial that trained it (tuning/fused_trial.py)

    @property
    def evaluations(self) -> int:
        return len(self.history)

    @property
    def finished_naturally(self) -> bool:
        """Its own last evaluation (end of training or patience); Ray's `done` is set either way."""
        return bool(len(self.history)) and bool(self.history.iloc[-1].get("done_training", False))

    @property
    def stopped_early(self) -> bool:
        """Stopped by the scheduler (ASHA, median rule...): terminated before its own end, and not by
        the clock (a trial the time budget cut ends TERMINATED too)."""
        reached_max_t = self.max_t is not None and self.evaluations >= self.max_t
        return (
            self.status in ("TERMINATED", "PAUSED")
            and not self.finished_naturally
            and not self.cut_by_budget
            and not reached_max_t
        )

    @property
    def stopped_by(self) -> str | None:
        """Why it ended (why_ended), or error; None while it has not ended."""
        if self.status == "ERROR":
            return "error"
        if not self.cut_by_budget and self.status not in ("TERMINATED", "PAUSED"):  # HyperBand ends PAUSED
            return None
        last = self.history.iloc[-1] if len(self.history) else {}
        return why_ended(last, self.evaluations, self.max_t, self.cut_by_budget)

    @property
    def state(self) -> str:
        """finished, stopped (by the scheduler, patience or the budget) or errored; Ray's own status,
        lower-cased, for a trial that has not ended (running, pending, paused)."""
        ended = {"finished": "finished", "error": "errored", None: self.status.lower()}
        return ended.get(self.stopped_by, "stopped")

    def best_row(self, metric: str, mode: str) -> pd.Series | None:
        if metric not in self.history or self.history[metric].isna().all():
            return None
        index = self.history[metric].idxmax() if mode == "max" else self.history[metric].idxmin()
        return self.history.loc[index]

    def checkpoints(self) -> list[Path]:
        return sorted(p for p in self.path.glob("checkpoint_*") if p.is_dir())

    def checkpoint_metrics(self, folder: Path) -> dict:
        """The metrics a checkpoint saved; a damaged caviar.json is passed over and noted in `damage`,
        so the rest of the experiment still reports."""
        meta = folder / META
        if not meta.is_file():
            return {}
        try:
            metrics = read_json_object(meta).get("metrics")
        except UserError as err:
            metrics = None
            if str(err) not in self.damage:
                self.damage.append(str(err))
        return metrics if isinstance(metrics, dict) else {}

    def best_checkpoint(self, metric: str, mode: str) -> Path | None:
        scored = [(self.checkpoint_metrics(c).get(metric), c) for c in self.checkpoints()]
        scored = [(m, c) for m, c in scored if isinstance(m, int | float) and not isinstance(m, bool)]
        if not scored:
            return None
        pick = max if mode == "max" else min
        return pick(scored, key=lambda mc: mc[0])[1]


def why_ended(last, evaluations: int, max_t: int | None, cut_by_budget: bool) -> str:
    """Why a trial that ended did: budget, patience, finished (its own end, or the scheduler's last
    rung) or scheduler, from its last report. The one rule: the records and the live view use it."""
    if cut_by_budget:
        return "budget"
    if last.get("done_training", False):
        return "patience" if last.get("stopped_by_patience", False) else "finished"
    return "finished" if max_t is not None and evaluations >= max_t else "scheduler"


def trials_cut(experiment_dir: Path) -> set[str]:
    """The trials the job's time budget cut, as tuning/ray_compat/time_budget.py recorded them."""
    record = Path(experiment_dir) / BUDGET_FILE
    if not record.is_file():
        return set()
    cut = read_json_object(record).get("cut")
    if not isinstance(cut, list):
        raise UserError(f"{record}: damaged, no 'cut' list of trial ids")
    return {str(t) for t in cut}


def load_trials(experiment_dir: Path, members: bool = True) -> list[TrialRecord]:
    """Trials from Ray's experiment state; histories and checkpoints from each trial's folder.
    A coarse-to-fine experiment's rounds are read together, each trial tagged with its round. A
    fused trial stands for its members, each a trial of its own (members=False: Ray's trials)."""
    experiment_dir = Path(experiment_dir).resolve()
    if members:
        from caviar.experiment.members import members_of

        return [member for trial in load_trials(experiment_dir, members=False) for member in members_of(trial)]
    if rounds := round_dirs(experiment_dir):
        records = []
        for folder in rounds:
            for record in _load_one(folder):
                record.round = round_of(folder)
                records.append(record)
        return records
    return _load_one(experiment_dir)


def _load_one(experiment_dir: Path) -> list[TrialRecord]:
    from ray.tune import ExperimentAnalysis

    if not list(experiment_dir.glob("experiment_state-*.json")):
        raise UserError(f"{experiment_dir} holds no Ray Tune experiment state (was it started?)")
    quiet = logging.getLogger("ray.tune.analysis.experiment_analysis")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # trials that never reported: we read their (empty) folders ourselves
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            analysis = ExperimentAnalysis(str(experiment_dir))
    except Exception as err:  # Ray raises its own types (and JSON errors) for a damaged state file
        raise UserError(f"{experiment_dir}: Ray's experiment state cannot be read ({short(err, 120)})") from None
    finally:
        quiet.setLevel(level)
    records = []
    histories = analysis.trial_dataframes  # Ray has read every result.json already
    cut = trials_cut(experiment_dir)
    for trial in analysis.trials:
        path = experiment_dir / trial.storage.trial_dir_name  # relocatable: copied folders keep working
        history = histories.get(trial.trial_id, pd.DataFrame())
        records.append(
            TrialRecord(
                trial_id=trial.trial_id,
                status=trial.status,
                params=flatten(trial.config),
                path=path,
                history=history.drop(columns=[c for c in history.columns if c.startswith("config/")]),
                error=_last_line(path / name) if (name := trial.run_metadata.error_filename) else None,
                resume_from=path / Path(trial.checkpoint.path).name if trial.checkpoint else None,
                cut_by_budget=trial.trial_id in cut,
            )
        )
    return records


def _last_line(error_file: Path) -> str | None:
    """The exception line of a trial's error.txt."""
    try:
        lines = [ln for ln in Path(error_file).read_text(encoding="utf-8").splitlines() if ln.strip()]
    except OSError:
        return None
    return lines[-1][:300] if lines else None


def interrupted(trials: list[TrialRecord]) -> bool:
    return any(t.status in UNFINISHED for t in trials)


class Experiment:
    """An experiment (or one round of it) read once from disk, with its job's metric and mode."""

    def __init__(self, folder: Path, trials: list[TrialRecord], job: JobSpec):
        self.folder, self._trials, self.job = Path(folder), trials, job

    @classmethod
    def load(cls, folder: Path, job: JobSpec | None = None) -> Experiment:
        """`job` for a folder that holds none itself (a round, a seed re-run)."""
        folder = Path(folder).resolve()
        job = job or load_job_of(folder)
        trials = load_trials(folder)
        max_t = getattr(job.scheduler, "max_t", None)
        for trial in trials:
            trial.max_t = max_t
        return cls(folder, trials, job)

    def trials(self) -> list[TrialRecord]:
        return self._trials

    @property
    def interrupted(self) -> bool:
        return interrupted(self._trials)

    def ranked(self, metric: str | None = None, mode: str | None = None) -> list[tuple[TrialRecord, pd.Series]]:
        """Trials that reported the metric, best first, each with its best evaluation: a trial that
        peaked and then overfit still counts at its peak. Ties keep the order the trials started in."""
        metric, mode = metric or self.job.metric, mode or self.job.mode
        scored = [(t, row) for t in self._trials if (row := t.best_row(metric, mode)) is not None]
        scored.sort(key=lambda tr: tr[1][metric], reverse=mode == "max")
        return scored

    def best(self) -> tuple[TrialRecord, pd.Series] | None:
        ranked = self.ranked()
        return ranked[0] if ranked else None

    def best_checkpoint(self, trial: TrialRecord) -> Path | None:
        return trial.best_checkpoint(self.job.metric, self.job.mode)

    def prune(self, keep_best_trials: int | None) -> int:
        """Each trial keeps its best checkpoint, and trials outside the best K keep none, only that
        checkpoint's validation predictions; bytes freed."""
        ranked = [t for t, _ in self.ranked()]
        kept = {t.trial_id for t in (ranked if keep_best_trials is None else ranked[:keep_best_trials])}
        freed = 0
        for trial in self._trials:
            best = self.best_checkpoint(trial)
            if best is not None and trial.trial_id not in kept and (predictions := Predictions.load(best)):
                predictions.save(trial.path)  # the trial's best can still be compared (experiment/selection.py)
            freed += _remove_all_but(trial.checkpoints(), best if trial.trial_id in kept else None)
        return freed

    def checkpoint_bytes(self) -> tuple[int, int]:
        """(bytes of every checkpoint on disk, bytes of the largest one)."""
        sizes = [folder_bytes(c) for t in self._trials for c in t.checkpoints()]
        return sum(sizes), max(sizes, default=0)


def folder_bytes(folder: Path) -> int:
    """Its files' bytes, with those a mirror of an experiment on object storage left there."""
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file()) + left_out_bytes(folder)


def _remove_all_but(checkpoints: list[Path], keep: Path | None) -> int:
    """Delete every checkpoint folder except `keep`; returns the bytes freed."""
    freed = 0
    for folder in checkpoints:
        if folder != keep:
            freed += folder_bytes(folder)
            shutil.rmtree(folder, ignore_errors=True)
    return freed
