"""Fused groups: a job's member configurations, sampled before any trial runs, grouped K at a time.

`fuse: K` trains up to K configurations that share a network shape as one stacked model
(model/fused.py). The members are sampled here exactly as Ray's random or grid search would sample
the job's trials (the same generator, seeded by the job), so `fuse: 4` and `fuse: 1` try the same
configurations. Members whose non-fusible values (anything outside FUSIBLE_KEYS: the network's
shape, batch size, data order (train.seed; train.init_seed is fusible), steps, precision, optimizer
kind) differ go to different groups.
"""

from __future__ import annotations

import json

from caviar.job.keys import flatten
from caviar.job.schema import JobSpec
from caviar.tuning.ray_compat.search_rng import search_rng
from caviar.tuning.search.search_space import param_space
from model.fused import FUSIBLE_MODEL, FUSIBLE_TRAIN

FUSIBLE_KEYS = frozenset(f"train.{key}" for key in FUSIBLE_TRAIN) | frozenset(f"model.{key}" for key in FUSIBLE_MODEL)
GROUP_KEY = "fused_group"  # the one value Ray searches over in a fused job: which group a trial trains


def sample_members(job: JobSpec) -> list[dict]:
    """The job's num_samples configurations (dotted keys), in the order Ray's search would make them."""
    from ray.tune.search.variant_generator import generate_variants  # Ray loads on first use: a fast start

    rng = search_rng(job.seed)
    spec, members = {"config": param_space(job)}, []
    for _ in range(job.num_samples):
        for _, variant in generate_variants(spec, constant_grid_search=False, random_state=rng):
            members.append(flatten(variant["config"]))
    return members


def group_members(members: list[dict], size: int) -> list[list[dict]]:
    """Members in sample order, grouped by their non-fusible values, at most `size` to a group."""
    by_shape: dict[str, list[dict]] = {}
    for member in members:
        fixed = {k: v for k, v in member.items() if k not in FUSIBLE_KEYS}
        by_shape.setdefault(json.dumps(fixed, sort_keys=True, default=str), []).append(member)
    return [same[i : i + size] for same in by_shape.values() for i in range(0, len(same), size)]


def fused_groups(job: JobSpec) -> list[list[dict]]:
    return group_members(sample_members(job), job.members_per_trial)
