"""The job's scheduler and search algorithm, as Ray Tune objects."""

from __future__ import annotations

from ray.tune.schedulers import (
    AsyncHyperBandScheduler,
    FIFOScheduler,
    HyperBandScheduler,
    MedianStoppingRule,
    PopulationBasedTraining,
)
from ray.tune.search import BasicVariantGenerator

from caviar.job.keys import nest
from caviar.job.schema import Asha, HyperBand, JobSpec, MedianStopping, Pbt
from caviar.tuning.search_space import to_ray


def build_scheduler(job: JobSpec):
    s = job.scheduler
    if isinstance(s, Asha):
        return AsyncHyperBandScheduler(
            time_attr=s.time_attr,
            max_t=s.max_t,
            grace_period=s.grace_period,
            reduction_factor=s.reduction_factor,
            brackets=s.brackets,
        )
    if isinstance(s, HyperBand):
        return HyperBandScheduler(time_attr=s.time_attr, max_t=s.max_t, reduction_factor=s.reduction_factor)
    if isinstance(s, MedianStopping):
        return MedianStoppingRule(
            time_attr=s.time_attr, grace_period=s.grace_period, min_samples_required=s.min_samples_required
        )
    if isinstance(s, Pbt):
        # PBT exploits by restoring another trial's checkpoint; model.train adopts the new values.
        return PopulationBasedTraining(
            time_attr=s.time_attr,
            perturbation_interval=s.perturbation_interval,
            hyperparam_mutations=nest({k: to_ray(d) for k, d in s.mutations.items()}),
            quantile_fraction=s.quantile_fraction,
            resample_probability=s.resample_probability,
        )
    return FIFOScheduler()


def concurrency_limit(job: JobSpec) -> int | None:
    """How many live trials the search may keep. Synchronous HyperBand PAUSES trials until their bracket
    is full, and paused trials count as live: a cap below the bracket size leaves every slot held by a
    paused trial and the run waits forever. For it, only the CPUs/GPUs bound what runs at once."""
    return None if job.scheduler.type == "hyperband" else job.max_concurrent_trials


def reuse_actors(job: JobSpec) -> bool:
    """One worker process runs trial after trial (no torch import per trial), except under the
    schedulers that PAUSE trials: a paused trial's cached actor kept its CPU, and in one CI run a
    HyperBand job waited 300 s on "insufficient resources" with nothing running. Nor for fused
    groups: in a reused worker, the second group's tune.get_context() still named the first trial,
    and its members wrote over the first group's (one process start per group is little to pay)."""
    return job.scheduler.type not in ("hyperband", "pbt") and not job.fused


def build_search(job: JobSpec):
    if job.search == "optuna":
        from optuna.samplers import TPESampler
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(sampler=TPESampler(seed=job.seed))
    # Ray ignores TuneConfig.max_concurrent_trials for a generator; it takes its own limit (0 = none)
    return BasicVariantGenerator(random_state=job.seed, max_concurrent=concurrency_limit(job) or 0)
