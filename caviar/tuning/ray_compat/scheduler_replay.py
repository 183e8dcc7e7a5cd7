"""A resume keeps the scheduler's decisions: ASHA's rungs and median stopping's recorded results are
rebuilt from the experiment's own records before any trial restarts.

Ray restores a Tuner's searcher, but the scheduler comes back as it was pickled at the start, with
empty rungs. A resumed quickstart then stopped 3 trials early where an uninterrupted run stopped 6,
and its worst trial ran to the end. Each rung of an `AsyncHyperBandScheduler` records, per trial id,
the metric (times the mode's sign) at the first result at or past its milestone; with results every
iteration that is the value at the milestone itself, which is what is written back here. Private
state (`Tuner._local_tuner._tune_config.scheduler`, `_Bracket._rungs`): the canary in
test_ray_compat checks both. Upstream: none filed.

Median stopping keeps each trial's results keyed by the Trial object, which exists only once Ray
has restored it: caviar builds the rule as a subclass (module-level, so Ray's pickled state loads)
whose on_trial_add, called for every restored trial before any starts, puts that trial's recorded
results back and marks it stopped if it was. Only results up to a live trial's checkpoint are put
back: the trial reports the later ones again. An experiment pickled by an earlier caviar holds the
plain rule, whose class is then swapped for the subclass (the one place that does so).

Which kind gets which rebuild is tuning/search/schedulers.py's; synchronous HyperBand (brackets of paused
trials) and PBT (population history) are not rebuilt, and resume says so in one line.
"""

from __future__ import annotations

from ray.tune.schedulers import MedianStoppingRule

from caviar.experiment.record import TrialRecord
from caviar.tuning.members.member_rungs import first_at_or_past


def live_scheduler(tuner):
    """The scheduler a restored Tuner will run with (private: Tuner._local_tuner._tune_config)."""
    return tuner._local_tuner._tune_config.scheduler


def rebuild_rungs(scheduler, trials: list[TrialRecord], metric: str, mode: str, time_attr: str) -> int:
    """Write every recorded rung value into an ASHA scheduler with one bracket; returns how many."""
    sign = 1.0 if mode == "max" else -1.0
    (bracket,) = scheduler._brackets
    written = 0
    for milestone, recorded in bracket._rungs:
        for trial in trials:
            if time_attr not in trial.history or metric not in trial.history:
                continue
            rows = zip(trial.history[time_attr], trial.history[metric], strict=True)
            if (value := first_at_or_past(rows, milestone)) is not None:
                recorded[trial.trial_id] = sign * value
                written += 1
    return written


class ReplayingMedianStoppingRule(MedianStoppingRule):
    """Median stopping that, as Ray re-adds each restored trial, gives it back its recorded results."""

    recorded: dict[str, tuple[list[dict], bool]]  # trial id -> (results, stopped by the rule); set on resume

    def on_trial_add(self, tune_controller, trial) -> None:
        super().on_trial_add(tune_controller, trial)
        recorded = self.__dict__.setdefault("recorded", {})  # a fresh run's rule has recorded nothing
        results, stopped = recorded.pop(trial.trial_id, ([], False))
        if results:
            self._results[trial] = [*results, *self._results.get(trial, [])]
        if stopped:
            self._stopped_trials.add(trial)


def rebuild_median(scheduler: MedianStoppingRule, trials: list[TrialRecord], metric: str, time_attr: str) -> int:
    """Arm the rule to replay each trial's recorded results as Ray restores it; returns how many."""
    if not isinstance(scheduler, ReplayingMedianStoppingRule):  # pickled by an earlier caviar
        scheduler.__class__ = ReplayingMedianStoppingRule
    scheduler.recorded = {}
    for trial in trials:
        rows = trial.replayed((time_attr, metric))[[time_attr, metric]].to_dict("records")
        if trial.status == "TERMINATED" and rows:
            rows.append(rows[-1])  # Ray's on_trial_complete appended the last result once more
        scheduler.recorded[trial.trial_id] = (rows, trial.stopped_early)
    return sum(len(results) for results, _ in scheduler.recorded.values())
