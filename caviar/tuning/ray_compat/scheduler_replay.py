"""A resume keeps ASHA's decisions: its rungs are rebuilt from the recorded results before any trial
restarts.

Ray restores a Tuner's searcher, but the scheduler comes back as it was pickled at the start, with
empty rungs. A resumed quickstart then stopped 3 trials early where an uninterrupted run stopped 6,
and its worst trial ran to the end. Each rung of an `AsyncHyperBandScheduler` records, per trial id,
the metric (times the mode's sign) at the first result at or past its milestone; with results every
iteration that is the value at the milestone itself, which is what is written back here. Private
state (`Tuner._local_tuner._tune_config.scheduler`, `_Bracket._rungs`): the canary in
test_ray_compat checks both. Upstream: none filed.

HyperBand, median stopping and PBT keep state keyed by Trial objects or population history, which
are not rebuilt: resume says so in one line.
"""

from __future__ import annotations

import logging

from caviar.experiment.record import TrialRecord

log = logging.getLogger("caviar.tune")


def rebuild_rungs(scheduler, trials: list[TrialRecord], metric: str, mode: str, time_attr: str) -> int:
    """Write every recorded rung value into an ASHA scheduler with one bracket; returns how many."""
    sign = 1.0 if mode == "max" else -1.0
    (bracket,) = scheduler._brackets
    written = 0
    for milestone, recorded in bracket._rungs:
        for trial in trials:
            if time_attr not in trial.history or metric not in trial.history:
                continue
            reached = trial.history[trial.history[time_attr] >= milestone]
            if len(reached) and reached.iloc[0][metric] == reached.iloc[0][metric]:  # not NaN
                recorded[trial.trial_id] = sign * float(reached.iloc[0][metric])
                written += 1
    return written


def keep_scheduler_decisions(tuner, trials: list[TrialRecord], job) -> None:
    """Before fit(): ASHA's rungs as the interrupted run left them, or one line saying why not."""
    from ray.tune.schedulers import AsyncHyperBandScheduler

    scheduler = tuner._local_tuner._tune_config.scheduler
    kind = type(scheduler).__name__
    if isinstance(scheduler, AsyncHyperBandScheduler) and len(scheduler._brackets) == 1:
        written = rebuild_rungs(scheduler, trials, job.metric, job.mode, scheduler._time_attr)
        log.info("resume: ASHA's rungs rebuilt from %d recorded results", written)
    elif kind != "FIFOScheduler":
        log.warning("resume: %s's state is not rebuilt; trials it would have stopped may run on", kind)
