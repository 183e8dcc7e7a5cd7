"""The tuning-job schema: a trial's fixed values (TrialConfig) plus search space, scheduler and limits.

search_space:                 # distributions over TrialConfig keys, by dotted path
  train.lr: {loguniform: [1.0e-4, 3.0e-3]}
  train.batch_size: {choice: [32, 64, 128]}
scheduler: {type: asha, max_t: 8, grace_period: 1, reduction_factor: 2}
"""

from __future__ import annotations

import difflib
from typing import Annotated, Any, Literal

from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator

from model.config import PretrainConfig, Strict, TrialConfig, split_dotted

REPORTED_METRICS = ("val_accuracy", "val_loss", "val_f1", "train_loss")
TIME_ATTRS = ("training_iteration", "epoch", "step", "time_total_s")
RANGE_KINDS = ("loguniform", "uniform", "quniform", "randint")
KINDS = (*RANGE_KINDS, "choice", "grid")
# model keys a pretrained network brings with it
SHAPE_KEYS = ("model.vocab_size", "model.layers", "model.hidden", "model.heads", "model.intermediate")


class Distribution(Strict):
    """Exactly one of: loguniform/uniform [low, high], quniform [low, high, q], randint [low, high]
    (both ends included), choice [values], grid [values]."""

    loguniform: tuple[float, float] | None = None
    uniform: tuple[float, float] | None = None
    quniform: tuple[float, float, float] | None = None
    randint: tuple[int, int] | None = None
    choice: list[Any] | None = Field(None, min_length=1)
    grid: list[Any] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _one_valid_kind(self) -> Distribution:
        given = [k for k in KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(KINDS)} (got {len(given)})")
        if self.kind in RANGE_KINDS:
            low, high = self.args[:2]
            if low >= high:
                raise ValueError(f"{self.kind}: low ({low}) must be below high ({high})")
            if self.kind == "loguniform" and low <= 0:
                raise ValueError(f"loguniform: low must be > 0 (got {low})")
            if self.kind == "quniform" and self.args[2] <= 0:
                raise ValueError(f"quniform: q must be > 0 (got {self.args[2]})")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in KINDS if getattr(self, k) is not None)

    @property
    def args(self) -> tuple | list:
        return getattr(self, self.kind)

    def samples(self) -> list:
        """Values a trial may get at the edges of this distribution: enough to type-check it."""
        return list(self.args) if self.kind in ("choice", "grid") else list(self.args[:2])


class Resources(Strict):
    cpu: float = Field(1, gt=0, description="CPUs per trial (torch threads follow it)")
    gpu: float = Field(0, ge=0, description="GPUs per trial; 0.25 packs 4 trials on one GPU")


class _TimedScheduler(Strict):
    time_attr: Literal[TIME_ATTRS] = "training_iteration"  # one evaluation = one training_iteration


class Asha(_TimedScheduler):
    type: Literal["asha"] = "asha"
    max_t: int = Field(8, ge=1, description="evaluations a trial may reach")
    grace_period: int = Field(1, ge=1, description="evaluations before a trial can be stopped")
    reduction_factor: float = Field(2, gt=1)
    brackets: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _grace_within_max(self) -> Asha:
        if self.grace_period > self.max_t:
            raise ValueError(
                f"scheduler.grace_period ({self.grace_period}) is more than scheduler.max_t ({self.max_t})"
            )
        return self


class HyperBand(_TimedScheduler):
    type: Literal["hyperband"] = "hyperband"
    max_t: int = Field(8, ge=1)
    reduction_factor: float = Field(3, gt=1)


class MedianStopping(_TimedScheduler):
    type: Literal["median_stopping"] = "median_stopping"
    grace_period: float = Field(1, ge=0)
    min_samples_required: int = Field(3, ge=1)


class Pbt(_TimedScheduler):
    type: Literal["pbt"] = "pbt"
    perturbation_interval: int = Field(2, ge=1, description="evaluations between exploit/explore steps")
    mutations: dict[str, Distribution] = Field(default_factory=dict, description="train.* keys to perturb")
    quantile_fraction: float = Field(0.25, gt=0, le=0.5)
    resample_probability: float = Field(0.25, ge=0, le=1)

    @field_validator("mutations")
    @classmethod
    def _train_keys_only(cls, mutations: dict) -> dict:
        for key in mutations:
            if not key.startswith("train.") or key in ("train.batch_size", "train.epochs", "train.max_steps"):
                raise ValueError(f"{key}: PBT can mutate train.* optimizer settings only (the network is kept)")
        return mutations


class Fifo(Strict):
    type: Literal["fifo"] = "fifo"


SCHEDULER_CLASSES = {"asha": Asha, "hyperband": HyperBand, "median_stopping": MedianStopping, "pbt": Pbt, "fifo": Fifo}
SCHEDULER_TYPES = tuple(SCHEDULER_CLASSES)
Scheduler = Annotated[Asha | HyperBand | MedianStopping | Pbt | Fifo, Field(discriminator="type")]


class CheckpointSpec(Strict):
    num_to_keep: int = Field(1, ge=1, description="checkpoints kept per trial, best by the metric")
    keep_best_trials: int | None = Field(None, ge=1, description="at the end, delete checkpoints of all others")


class RefineSpec(Strict):
    """How a round narrows the next one's space (with `rounds` > 1)."""

    top_k: int = Field(3, ge=1, description="trials of the round before that the next round centres on")
    margin: float = Field(0.25, ge=0, description="added on each side, as a share of the top-k span")


class FinalSpec(Strict):
    """Seed re-runs before promotion (`caviar promote --reseed S` does the same)."""

    seeds: int | None = Field(None, ge=2, description="re-train the top configurations with this many seeds")
    top_k: int = Field(3, ge=1, description="configurations re-trained")


class LrFindSpec(Strict):
    """The LR range test (`caviar lr-find`, and `train.lr: {from_lr_find: true}` in a job)."""

    min_lr: float = Field(1e-6, gt=0)
    max_lr: float = Field(1.0, gt=0)
    mode: Literal["exp", "linear"] = Field("exp", description="how the lr rises from min_lr to max_lr")
    steps: int | None = Field(300, ge=10, description="optimizer steps of the test (or give epochs)")
    epochs: float | None = Field(None, gt=0, description="length in epochs instead of steps, as in the seed")
    eval_points: int = Field(20, ge=2, description="val-accuracy measurements along the ramp")
    val_limit: int = Field(1000, ge=10, description="val reviews per measurement")

    @model_validator(mode="before")
    @classmethod
    def _steps_or_epochs(cls, raw: Any) -> Any:
        """Epochs given: they set the length, and the default step count no longer applies."""
        if isinstance(raw, dict) and raw.get("epochs") is not None:
            if raw.get("steps") is not None:
                raise ValueError("lr_find: give steps or epochs, not both")
            raw = {**raw, "steps": None}
        return raw

    @model_validator(mode="after")
    def _range(self) -> LrFindSpec:
        if self.min_lr >= self.max_lr:
            raise ValueError(f"lr_find.min_lr ({self.min_lr}) must be below lr_find.max_lr ({self.max_lr})")
        return self


class JobSpec(TrialConfig):
    search_space: dict[str, Distribution] = Field(default_factory=dict)
    scheduler: Scheduler = Field(default_factory=Asha)
    search: Literal["random", "grid", "optuna"] = "random"
    num_samples: int = Field(8, ge=1, description="trials (with search: grid, repeats of the whole grid)")
    max_concurrent_trials: int | None = Field(None, ge=1)
    resources_per_trial: Resources = Field(default_factory=Resources)
    time_budget_s: float | None = Field(None, gt=0)
    max_failures: int = Field(1, ge=0, description="retries of a crashed trial, from its last checkpoint")
    metric: Literal[REPORTED_METRICS] = "val_accuracy"
    mode: Literal["max", "min"] = "max"
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    storage: str = Field("results", description="local folder or a URI Ray's storage_path takes (s3://...)")
    seed: int | None = Field(0, description="seeds the search algorithm; trials keep train.seed")
    rounds: int = Field(1, ge=1, description="coarse-to-fine: each round narrows the space around the top-k")
    refine: RefineSpec = Field(default_factory=lambda: RefineSpec())
    lr_find: LrFindSpec = Field(default_factory=LrFindSpec)
    final: FinalSpec = Field(default_factory=lambda: FinalSpec())
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    # `train.lr: {from_lr_find: true}` in the YAML: input shorthand, not a job value, so it is kept
    # out of the dump (the saved job holds the lr range the test found instead)
    _lr_from_lr_find: bool = PrivateAttr(False)
    # `model.pretrained: {from_pretrain: true}`: stage 0 pretrains (or finds) the folder, and the
    # saved job names that folder instead
    _from_pretrain: bool = PrivateAttr(False)

    @model_validator(mode="wrap")
    @classmethod
    def _pretrain_marker(cls, raw: Any, handler) -> JobSpec:
        """`model.pretrained: {from_pretrain: true}`: fine-tune what this job's `pretrain:` makes."""
        raw, marked = _take_marker(raw, "model.pretrained", "from_pretrain", "a hub id, a folder")
        job = handler(raw)
        if marked:
            job._from_pretrain = True
            job._check_shape_is_fixed("the pretrain stage")
        return job

    @property
    def from_pretrain(self) -> bool:
        return self._from_pretrain

    def _check_shape_is_fixed(self, source: str) -> None:
        """The network's shape comes from the pretrained weights: searching it would be silently ignored."""
        for key in self.search_space:
            if key in SHAPE_KEYS:
                raise ValueError(f"search_space.{key}: the network's shape comes from {source}; drop it")

    @model_validator(mode="wrap")
    @classmethod
    def _lr_marker(cls, raw: Any, handler) -> JobSpec:
        """`train.lr: {from_lr_find: true}`: the tuner runs the range test, then searches inside it."""
        raw, marked = _take_marker(raw, "train.lr", "from_lr_find", "a number")
        job = handler(raw)
        if marked:
            if "train.lr" in job.search_space:
                raise ValueError("search_space.train.lr: train.lr comes from lr-find in this job; drop one of them")
            job._lr_from_lr_find = True
        return job

    @property
    def lr_from_lr_find(self) -> bool:
        return self._lr_from_lr_find

    @model_validator(mode="before")
    @classmethod
    def _scheduler_type_defaults_to_asha(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and isinstance(raw.get("scheduler"), dict) and "type" not in raw["scheduler"]:
            raw = {**raw, "scheduler": {"type": "asha", **raw["scheduler"]}}
        return raw

    @model_validator(mode="after")
    def _space_fits_the_trial_config(self) -> JobSpec:
        fixed = self.trial_config().model_dump()
        spaces = [("search_space", self.search_space)]
        if isinstance(self.scheduler, Pbt):
            spaces.append(("scheduler.mutations", self.scheduler.mutations))
        for where, space in spaces:
            for key, dist in space.items():
                check_key(f"{where}.{key}", key, dist, fixed)
        if self.model.pretrained:
            self._check_shape_is_fixed(f"model.pretrained ({short(self.model.pretrained, 60)})")
        if self.search == "grid" and (bad := [k for k, d in self.search_space.items() if d.kind in RANGE_KINDS]):
            raise ValueError(f"search_space.{bad[0]}: search: grid takes only grid or choice values")
        if self.search == "optuna" and (bad := [k for k, d in self.search_space.items() if d.kind == "grid"]):
            raise ValueError(f"search_space.{bad[0]}: search: optuna cannot sample a grid; use choice")
        return self

    def with_pretrained(self, folder: str) -> JobSpec:
        """The job after stage 0: fine-tune from `folder`, the pretraining it asked for."""
        raw = self.model_dump(mode="json")
        raw["model"]["pretrained"] = folder
        job = JobSpec.model_validate(raw)
        job._lr_from_lr_find = self._lr_from_lr_find
        return job

    def trial_config(self) -> TrialConfig:
        return TrialConfig.model_validate(self.model_dump(include=set(TrialConfig.model_fields)))

    def with_lr_range(self, base_lr: float, max_lr: float) -> JobSpec:
        """The job after its LR range test: lr searched log-uniformly inside [base_lr, max_lr], and a
        cyclical schedule bounded by the same pair."""
        raw = self.model_dump(mode="json")
        raw["search_space"]["train.lr"] = {"loguniform": [base_lr, max_lr]}
        raw["train"]["lr"] = max_lr
        if self.train.schedule == "cyclical":
            raw["train"]["base_lr"], raw["train"]["max_lr"] = base_lr, max_lr
        return JobSpec.model_validate(raw)


def _take_marker(raw: Any, key: str, flag: str, otherwise: str) -> tuple[Any, bool]:
    """`section.leaf: {flag: true}` in the input: (raw without that key, True); the key left as it
    is when it holds a plain value. Markers are input shorthand for a stage, never job values."""
    section, leaf = split_dotted(key)
    part = raw.get(section) if isinstance(raw, dict) else None
    if not (isinstance(part, dict) and isinstance(part.get(leaf), dict)):
        return raw, False
    if set(part[leaf]) != {flag} or part[leaf][flag] is not True:
        raise ValueError(f"{key}: give {otherwise} or {{{flag}: true}}")
    return {**raw, section: {k: v for k, v in part.items() if k != leaf}}, True


def short(text: str, limit: int = 80) -> str:
    """At most `limit` characters of a value for an error message: input can be any size."""
    text = str(text)
    return text if len(text) <= limit else f"{text[: limit - 20]}... ({len(text)} characters)"


def trial_keys() -> list[str]:
    """Every dotted key a search space may name: train.lr, model.layers, ..."""
    return [
        f"{s}.{leaf}"
        for s in ("data", "model", "train")
        for leaf in TrialConfig.model_fields[s].annotation.model_fields
    ]


def check_key(where: str, key: str, dist: Distribution, fixed: dict) -> None:
    """The dotted key must name a TrialConfig value, and every edge value must be valid there."""
    section, leaf = split_dotted(key)
    if key not in trial_keys():
        close = difflib.get_close_matches(key, trial_keys(), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else "expected e.g. train.lr or model.layers"
        raise ValueError(f"{where}: unknown key ({hint})")
    for value in dist.samples():
        trial = {**fixed, section: {**fixed[section], leaf: value}}
        try:
            TrialConfig.model_validate(trial)
        except ValidationError as err:
            first = err.errors()[0]
            raise ValueError(
                f"{where}: value {short(repr(value))}: {short(first['msg'].removeprefix('Value error, '), 200)}"
            ) from None
