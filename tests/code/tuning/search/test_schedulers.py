"""Issue 50, item 2: one object per scheduler kind (tuning/search/schedulers.py) says all caviar does with
that scheduler; every kind the job schema accepts has one, and each schema class says whether fused
members can be stopped by it."""

from __future__ import annotations

import pytest
from ray.tune.schedulers import (
    AsyncHyperBandScheduler,
    FIFOScheduler,
    HyperBandScheduler,
    MedianStoppingRule,
    PopulationBasedTraining,
)

from caviar.job.schema import SCHEDULER_CLASSES, JobSpec
from caviar.tuning.ray_compat.scheduler_replay import ReplayingMedianStoppingRule
from caviar.tuning.search.schedulers import KINDS, build_scheduler, concurrency_limit, kind_of, reuse_actors
from tests.conftest import TINY

BUILT = {
    "asha": AsyncHyperBandScheduler,
    "hyperband": HyperBandScheduler,
    "median_stopping": MedianStoppingRule,
    "pbt": PopulationBasedTraining,
    "fifo": FIFOScheduler,
}


def job_with(scheduler: dict, **more) -> JobSpec:
    if scheduler["type"] == "pbt":
        scheduler = {"mutations": {"train.lr": {"loguniform": [1e-4, 1e-2]}}, **scheduler}
    return JobSpec.model_validate({**TINY, "scheduler": scheduler, "max_concurrent_trials": 2, **more})


def test_every_scheduler_the_schema_accepts_has_one_kind():
    assert set(KINDS) == set(SCHEDULER_CLASSES) == set(BUILT)


@pytest.mark.parametrize("name", sorted(BUILT))
def test_a_kind_builds_rays_scheduler_and_says_what_it_does_to_trials(name):
    job = job_with({"type": name})
    built = build_scheduler(job)
    assert isinstance(built, BUILT[name]) and kind_of(job).name == name
    pauses = name in ("hyperband", "pbt")
    assert reuse_actors(job) is not pauses  # a paused trial's cached actor would hold its CPU
    assert concurrency_limit(job) == (None if name == "hyperband" else 2)
    fusible = name in ("asha", "median_stopping", "fifo")
    assert (job.scheduler.members_problem() is None) is fusible
    assert (kind_of(job).member_rule(job.scheduler, job.mode) is not None) is (fusible and name != "fifo")


def test_median_stopping_is_built_ready_to_replay_a_resume():
    """No class is swapped on a live scheduler for an experiment this caviar started."""
    assert type(build_scheduler(job_with({"type": "median_stopping"}))) is ReplayingMedianStoppingRule


def test_a_scheduler_that_cannot_stop_members_refuses_fuse_in_one_line():
    with pytest.raises(ValueError, match="fuse: 2 works with scheduler asha, median_stopping or fifo; pbt acts"):
        job_with({"type": "pbt"}, fuse=2)
    with pytest.raises(ValueError, match="one ASHA bracket"):
        job_with({"type": "asha", "brackets": 2}, fuse=2)
