"""The `scheduler:` section of a job: one class per scheduler type, with its settings and whether
fused members can be stopped by it (tuning/search/schedulers.py holds what caviar does with each kind).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from caviar.job.distributions import Distribution
from model.config import Strict

TIME_ATTRS = ("training_iteration", "epoch", "step", "time_total_s")
TIME_ATTR_HELP = "what the scheduler counts: training_iteration = one evaluation"


class _TimedScheduler(Strict):
    time_attr: Literal[TIME_ATTRS] = Field("training_iteration", description=TIME_ATTR_HELP)


class Asha(_TimedScheduler):
    type: Literal["asha"] = Field("asha", description="asynchronous successive halving (the default)")
    max_t: int = Field(8, ge=1, description="evaluations a trial may reach")
    grace_period: int = Field(1, ge=1, description="evaluations before a trial can be stopped")
    reduction_factor: float = Field(2, gt=1, description="1/reduction_factor of the trials go on at each rung")
    brackets: int = Field(1, ge=1, description="brackets of different grace periods")

    def members_problem(self) -> str | None:
        """Why fused members cannot be stopped by it, as the end of a one-line error; None: they can."""
        if self.time_attr != "training_iteration" or self.brackets != 1:
            return "counts evaluations with one ASHA bracket (scheduler.time_attr: training_iteration, brackets: 1)"
        return None

    @model_validator(mode="after")
    def _grace_within_max(self) -> Asha:
        if self.grace_period > self.max_t:
            raise ValueError(
                f"scheduler.grace_period ({self.grace_period}) is more than scheduler.max_t ({self.max_t})"
            )
        return self


class HyperBand(_TimedScheduler):
    type: Literal["hyperband"] = Field("hyperband", description="synchronous HyperBand (pauses trials)")
    max_t: int = Field(8, ge=1, description="evaluations a trial may reach")
    reduction_factor: float = Field(3, gt=1, description="1/reduction_factor of the trials go on at each rung")

    def members_problem(self) -> str | None:
        return f"works with scheduler asha, median_stopping or fifo; {self.type} acts on whole trials"


class MedianStopping(_TimedScheduler):
    type: Literal["median_stopping"] = Field("median_stopping", description="stop below the running median")
    grace_period: float = Field(1, ge=0, description="time_attr units before a trial can be stopped")
    min_samples_required: int = Field(3, ge=1, description="trials needed before the rule applies")

    def members_problem(self) -> str | None:
        if self.time_attr != "training_iteration":
            return "counts evaluations (scheduler.time_attr: training_iteration)"
        return None


class Pbt(_TimedScheduler):
    type: Literal["pbt"] = Field("pbt", description="population-based training: exploit and explore")
    perturbation_interval: int = Field(2, ge=1, description="evaluations between exploit/explore steps")
    mutations: dict[str, Distribution] = Field(default_factory=dict, description="train.* keys to perturb")
    quantile_fraction: float = Field(0.25, gt=0, le=0.5, description="bottom share that copies the top share")
    resample_probability: float = Field(0.25, ge=0, le=1, description="chance a mutation redraws instead of scaling")

    def members_problem(self) -> str | None:
        return f"works with scheduler asha, median_stopping or fifo; {self.type} acts on whole trials"

    @field_validator("mutations")
    @classmethod
    def _train_keys_only(cls, mutations: dict) -> dict:
        for key in mutations:
            if not key.startswith("train.") or key in ("train.batch_size", "train.epochs", "train.max_steps"):
                raise ValueError(f"{key}: PBT can mutate train.* optimizer settings only (the network is kept)")
        return mutations


class Fifo(Strict):
    type: Literal["fifo"] = Field("fifo", description="no early stopping: every trial runs to its end")

    def members_problem(self) -> str | None:
        return None


SCHEDULER_CLASSES = {"asha": Asha, "hyperband": HyperBand, "median_stopping": MedianStopping, "pbt": Pbt, "fifo": Fifo}
SCHEDULER_TYPES = tuple(SCHEDULER_CLASSES)
Scheduler = Annotated[Asha | HyperBand | MedianStopping | Pbt | Fifo, Field(discriminator="type")]
