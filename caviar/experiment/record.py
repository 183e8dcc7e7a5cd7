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
from pathlib import Path

import pandas as pd

from caviar.experiment.job_record import load_job_of
from caviar.experiment.layout import BUDGET_FILE, round_dirs, round_of
from caviar.experiment.members import members_of
from caviar.experiment.trial_record import UNFINISHED, TrialRecord, folder_bytes, why_ended
from caviar.job.keys import flatten
from caviar.job.schema import JobSpec
from model.errors import UserError, short
from model.files import read_json_object
from model.predictions import Predictions

# TrialRecord and the rest are read from here by most of caviar: one place to import a record from
__all__ = ["UNFINISHED", "Experiment", "TrialRecord", "folder_bytes", "load_trials", "why_ended"]


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


def _remove_all_but(checkpoints: list[Path], keep: Path | None) -> int:
    """Delete every checkpoint folder except `keep`; returns the bytes freed."""
    freed = 0
    for folder in checkpoints:
        if folder != keep:
            freed += folder_bytes(folder)
            shutil.rmtree(folder, ignore_errors=True)
    return freed
