"""Which trials the data cannot tell apart: each trial's metric with its 95% interval, and for the
top K the paired difference against the leader on the same validation reviews.

The predictions come from the file each kept checkpoint carries (model/predictions.py), or from the
copy a trial keeps when pruning takes its checkpoint; nothing is re-run. A trial whose paired
interval against the leader holds 0 is tied with it.
"""

from __future__ import annotations

from dataclasses import dataclass

from caviar.experiment.intervals import Difference, Interval, interval, paired_difference
from caviar.experiment.record import Experiment, TrialRecord
from model.predictions import Predictions

PAIRED_TOP_K = 10  # the trials compared with the leader, best first


@dataclass(frozen=True)
class Standing:
    """Where one trial stands: its metric's interval, and against the leader (top K only)."""

    interval: Interval | None
    vs_best: Difference | None = None

    @property
    def tied(self) -> bool | None:
        return None if self.vs_best is None else self.vs_best.tied


def standings(experiment: Experiment, top_k: int = PAIRED_TOP_K) -> dict[str, Standing]:
    """By trial id, for every trial whose best checkpoint's predictions are on disk."""
    metric = experiment.job.metric
    ranked = [t for t, _ in experiment.ranked()]
    found = {t.trial_id: p for t in ranked if (p := best_predictions(experiment, t)) is not None}
    out = {tid: Standing(interval(metric, p.labels, p.positive)) for tid, p in found.items()}
    if not ranked or ranked[0].trial_id not in found:
        return out
    leader = found[ranked[0].trial_id]
    for trial in ranked[1:top_k]:
        if (mine := found.get(trial.trial_id)) is not None and mine.same_examples(leader):
            out[trial.trial_id] = Standing(
                out[trial.trial_id].interval, paired_difference(metric, leader.labels, leader.positive, mine.positive)
            )
    return out


def best_predictions(experiment: Experiment, trial: TrialRecord) -> Predictions | None:
    checkpoint = experiment.best_checkpoint(trial)
    for folder in (checkpoint, trial.path):
        if folder is not None and (kept := Predictions.load(folder)) is not None:
            return kept
    return None
