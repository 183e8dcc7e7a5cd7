"""The job's scheduler, one object per kind, and its search algorithm, as Ray Tune objects.

A kind says all caviar does with its scheduler: it builds the Ray scheduler, says whether that
scheduler pauses trials (which bounds concurrency and actor reuse) or restores other trials'
checkpoints, how it stops fused members (a MemberRule for tuning/members/member_rungs.py), and how a resume
keeps its decisions. Adding a scheduler is a kind here, a class in caviar/job/schema.py and their
tests.
"""

from __future__ import annotations

import logging
from typing import ClassVar

from ray.tune.schedulers import (
    AsyncHyperBandScheduler,
    FIFOScheduler,
    HyperBandScheduler,
    PopulationBasedTraining,
)
from ray.tune.search import BasicVariantGenerator

from caviar.experiment.record import TrialRecord
from caviar.job.keys import nest
from caviar.job.schema import JobSpec
from caviar.tuning.members.member_rungs import MemberRule
from caviar.tuning.ray_compat.scheduler_replay import (
    ReplayingMedianStoppingRule,
    live_scheduler,
    rebuild_median,
    rebuild_rungs,
)
from caviar.tuning.search.search_space import to_ray

log = logging.getLogger("caviar.tune")


class Kind:
    """FIFO: no early stopping, nothing to keep on resume; the base of every kind."""

    name: ClassVar[str] = "fifo"
    pauses_trials: ClassVar[bool] = False  # paused trials hold their slots and their cached actors
    fills_brackets: ClassVar[bool] = False  # it waits for a bracket's trials: no cap on live trials
    restores_other_trials: ClassVar[bool] = False  # it needs every trial's checkpoints while it runs

    def build(self, s):
        return FIFOScheduler()

    def member_rule(self, s, mode: str) -> MemberRule | None:
        """How fused members are stopped (None: they are not); job/schema.py refuses `fuse` where a
        kind has no rule."""
        return None

    def keep_decisions(self, scheduler, trials: list[TrialRecord], job: JobSpec) -> None:
        """Before a resumed fit(): the decisions the interrupted run had made, or one line saying why not."""
        if type(scheduler) is not FIFOScheduler:
            log.warning("resume: %s's state is not rebuilt; trials it would have stopped may run on", self.name)


class Asha(Kind):
    name = "asha"

    def build(self, s):
        return AsyncHyperBandScheduler(
            time_attr=s.time_attr,
            max_t=s.max_t,
            grace_period=s.grace_period,
            reduction_factor=s.reduction_factor,
            brackets=s.brackets,
        )

    def member_rule(self, s, mode: str) -> MemberRule:
        return MemberRule("asha", mode, s.grace_period, reduction_factor=s.reduction_factor, max_t=s.max_t)

    def keep_decisions(self, scheduler, trials: list[TrialRecord], job: JobSpec) -> None:
        if job.scheduler.brackets != 1:
            log.warning(
                "resume: ASHA with %d brackets is not rebuilt; trials it would have stopped may run on",
                job.scheduler.brackets,
            )
            return
        written = rebuild_rungs(scheduler, trials, job.metric, job.mode, job.scheduler.time_attr)
        log.info("resume: ASHA's rungs rebuilt from %d recorded results", written)


class HyperBand(Kind):
    name = "hyperband"
    pauses_trials = True
    fills_brackets = True

    def build(self, s):
        return HyperBandScheduler(time_attr=s.time_attr, max_t=s.max_t, reduction_factor=s.reduction_factor)


class MedianStopping(Kind):
    name = "median_stopping"

    def build(self, s):
        # the replaying subclass from the start: a resume fills in what it recorded (ray_compat)
        return ReplayingMedianStoppingRule(
            time_attr=s.time_attr, grace_period=s.grace_period, min_samples_required=s.min_samples_required
        )

    def member_rule(self, s, mode: str) -> MemberRule:
        return MemberRule("median", mode, s.grace_period, min_samples_required=s.min_samples_required)

    def keep_decisions(self, scheduler, trials: list[TrialRecord], job: JobSpec) -> None:
        written = rebuild_median(scheduler, trials, job.metric, job.scheduler.time_attr)
        log.info("resume: median stopping's results rebuilt from %d recorded results", written)


class Pbt(Kind):
    name = "pbt"
    pauses_trials = True
    restores_other_trials = True

    def build(self, s):
        # PBT exploits by restoring another trial's checkpoint; model.train adopts the new values.
        return PopulationBasedTraining(
            time_attr=s.time_attr,
            perturbation_interval=s.perturbation_interval,
            hyperparam_mutations=nest({k: to_ray(d) for k, d in s.mutations.items()}),
            quantile_fraction=s.quantile_fraction,
            resample_probability=s.resample_probability,
        )


KINDS: dict[str, Kind] = {k.name: k() for k in (Kind, Asha, HyperBand, MedianStopping, Pbt)}


def kind_of(job: JobSpec) -> Kind:
    """The job's scheduler kind: what stops its trials, or a fused job's members."""
    return KINDS[job.scheduler.type]


def ray_kind_of(job: JobSpec) -> Kind:
    """The kind Ray itself runs: a fused job's Ray trials are its groups, under FIFO; its scheduler
    acts on the members inside them (tuning/members/member_rungs.py)."""
    return KINDS["fifo"] if job.fused else kind_of(job)


def build_scheduler(job: JobSpec):
    return ray_kind_of(job).build(job.scheduler)


def keep_scheduler_decisions(tuner, trials: list[TrialRecord], job: JobSpec) -> None:
    """A resumed Tuner's scheduler given back the decisions the interrupted run made (a fused job's
    member table is rebuilt by tuning/members/fused_search.py)."""
    ray_kind_of(job).keep_decisions(live_scheduler(tuner), trials, job)


def concurrency_limit(job: JobSpec) -> int | None:
    """How many live trials the search may keep. Synchronous HyperBand PAUSES trials until their bracket
    is full, and paused trials count as live: a cap below the bracket size leaves every slot held by a
    paused trial and the run waits forever. For it, only the CPUs/GPUs bound what runs at once."""
    return None if kind_of(job).fills_brackets else job.max_concurrent_trials


def reuse_actors(job: JobSpec) -> bool:
    """One worker process runs trial after trial (no torch import per trial), except under the
    schedulers that PAUSE trials: a paused trial's cached actor kept its CPU, and in one CI run a
    HyperBand job waited 300 s on "insufficient resources" with nothing running. Nor for fused
    groups: in a reused worker, the second group's tune.get_context() still named the first trial,
    and its members wrote over the first group's (one process start per group is little to pay)."""
    return not kind_of(job).pauses_trials and not job.fused


def build_search(job: JobSpec):
    if job.search == "optuna":
        from optuna.samplers import TPESampler
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(sampler=TPESampler(seed=job.seed))
    # Ray ignores TuneConfig.max_concurrent_trials for a generator; it takes its own limit (0 = none)
    return BasicVariantGenerator(random_state=job.seed, max_concurrent=concurrency_limit(job) or 0)
