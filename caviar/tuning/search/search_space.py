"""Search spaces: job distributions to Ray Tune's, and a sampled config back to a TrialConfig.

Ray gets a nested space ({"train": {"lr": loguniform}}) so its CSV, TensorBoard and the leaderboard
name parameters by section; a trial's config is laid over the job's fixed values.
"""

from __future__ import annotations

import copy

from ray import tune

from caviar.job.distributions import Distribution
from caviar.job.keys import flatten, nest, set_dotted
from caviar.job.pretrain_search import lay_over
from caviar.job.schema import JobSpec
from model.config import TrialConfig


def to_ray(dist: Distribution, as_grid: bool = False):
    args = dist.args
    if dist.kind == "grid" or (as_grid and dist.kind == "choice"):
        return tune.grid_search(list(args))
    return {
        "loguniform": lambda: tune.loguniform(*args),
        "uniform": lambda: tune.uniform(*args),
        "quniform": lambda: tune.quniform(*args),
        "randint": lambda: tune.randint(args[0], args[1] + 1),  # ours includes high; Ray's excludes it
        "choice": lambda: tune.choice(list(args)),
    }[dist.kind]()


def param_space(job: JobSpec) -> dict:
    return nest({k: to_ray(d, as_grid=job.search == "grid") for k, d in job.search_space.items()})


def trial_config(base: dict, sampled: dict) -> TrialConfig:
    """The job's fixed values (JobSpec.trial_base) with a trial's sampled values laid over them; its
    pretraining values, when searched, choose its model.pretrained (job/pretrain_search.py)."""
    merged = copy.deepcopy(base)
    for key, value in lay_over(merged, flatten(sampled)).items():
        set_dotted(merged, key, value)
    return TrialConfig.model_validate(merged)
