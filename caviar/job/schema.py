"""The tuning-job schema: a trial's fixed values (TrialConfig) plus search space, scheduler and limits.

scheduler: {type: asha, max_t: 8, grace_period: 1, reduction_factor: 2}
`caviar schema` prints every field below with its default and description (docs/jobs.md).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from caviar.job import pretrain_search
from caviar.job.distributions import RANGE_KINDS, Distribution, check_key
from caviar.job.fusible import FUSE_HELP, fuse_value, fusion_problem
from caviar.job.keys import split_dotted
from caviar.job.resolved_keys import SET_BY_CAVIAR
from caviar.job.scheduler_specs import (  # noqa: F401 - the schema's names, read from here too
    SCHEDULER_CLASSES,
    SCHEDULER_TYPES,
    TIME_ATTRS,
    Asha,
    Fifo,
    HyperBand,
    MedianStopping,
    Pbt,
    Scheduler,
)
from model.config import METRICS, SHAPE_FIELDS, PretrainConfig, Strict, TrialConfig
from model.errors import short

SHAPE_KEYS = tuple(f"model.{leaf}" for leaf in SHAPE_FIELDS)  # what a pretrained network brings with it


class Resources(Strict):
    cpu: float = Field(1, gt=0, description="CPUs per trial (torch threads follow it)")
    gpu: float = Field(0, ge=0, description="GPUs per trial; 0.25 packs 4 trials on one GPU")


class CheckpointSpec(Strict):
    num_to_keep: int = Field(1, ge=1, description="checkpoints kept per trial, best by the metric")
    keep_best_trials: int | None = Field(None, ge=1, description="at the end, delete checkpoints of all others")


class RefineSpec(Strict):
    """How a round narrows the next one's space (with `rounds` > 1)."""

    top_k: int = Field(3, ge=1, description="trials of the round before that the next round centres on")
    margin: float = Field(0.25, ge=0, description="added on each side, as a share of the top-k span")


MAX_SEEDS, MAX_TOP_K = 64, 32  # seed re-runs are whole trainings: 64 x 32 of them is already days


class FinalSpec(Strict):
    """Seed re-runs before promotion (`caviar reseed` does the same after the search)."""

    seeds: int | None = Field(
        None, ge=2, le=MAX_SEEDS, description="re-train the top configurations with this many seeds"
    )
    top_k: Annotated[int, Field(ge=1, le=MAX_TOP_K)] | Literal["tied"] = Field(
        3,
        description="configurations re-trained, best first; `tied`: the best and the trials tied with it "
        "(paired 95% on validation, among the top 10)",
    )
    max_tied: int = Field(4, ge=1, le=9, description="with top_k: tied, at most this many tied trials besides the best")


class PromoteSpec(Strict):
    """What `caviar promote` asks of a candidate before it replaces the served version."""

    min_gain: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="gate accuracy the candidate must gain (0.005 = half a point): the paired 95% "
        "interval of its gain over the current version must lie above this",
    )
    min_gate_reviews: int = Field(
        500,
        ge=1,
        description="fewest gate reviews, held out by both the candidate and the version in service, "
        "that may decide a promotion; fewer refuse it (--force promotes anyway)",
    )


class TrackingSpec(Strict):
    mlflow: str | None = Field(
        None, description="an MLflow tracking URI (http://..., sqlite:///...); default MLFLOW_TRACKING_URI"
    )


class LrFindSpec(Strict):
    """The LR range test (`caviar lr-find`, and `train.lr: {from_lr_find: true}` in a job)."""

    min_lr: float = Field(1e-6, gt=0, description="where the ramp starts")
    max_lr: float = Field(1.0, gt=0, description="where the ramp ends (it stops earlier once the loss diverges)")
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


class Stages(Strict):
    """The stages before the search. The YAML shorthands turn them on; each is off again in the
    resolved job (caviar_job.json), which names what the stage made instead."""

    pretrain: bool = Field(False, description="stage 0 pretrains: `model.pretrained: {from_pretrain: true}`")
    lr_find: bool = Field(
        False, description="the LR range test sets train.lr's range: `train.lr: {from_lr_find: true}`"
    )
    pretrained_by: dict[str, str] = Field(
        default_factory=dict,
        description="set by stage 0 when pretrain.* is searched: each setting's folder",
        json_schema_extra={SET_BY_CAVIAR: True},
    )
    # what each stage made, named in the resolved record (caviar_job.json); the values it sets in the
    # job's own keys (model.pretrained, search_space.train.lr) go back to the stage's shorthand when
    # that record is used as a job again (job/stage_outputs.py)
    pretrained: str | None = Field(
        None, description="set by stage 0: the folder it pretrained", json_schema_extra={SET_BY_CAVIAR: True}
    )
    lr_range: tuple[float, float] | None = Field(
        None, description="set by the LR range test: train.lr's [base, max]", json_schema_extra={SET_BY_CAVIAR: True}
    )
    fuse_chosen: int | None = Field(
        None,
        ge=1,
        le=64,
        description="set by fuse: auto's pilot: the K it chose",
        json_schema_extra={SET_BY_CAVIAR: True},
    )


class JobSpec(TrialConfig):
    search_space: dict[str, Distribution] = Field(
        default_factory=dict, description="distributions over trial values by dotted key, e.g. train.lr"
    )
    scheduler: Scheduler = Field(default_factory=Asha, description="what stops weak trials: asha, hyperband, ...")
    search: Literal["random", "grid", "optuna"] = Field("random", description="how configurations are drawn")
    num_samples: int = Field(8, ge=1, description="trials (with search: grid, repeats of the whole grid)")
    max_concurrent_trials: int | None = Field(None, ge=1, description="trials at once (default: as resources allow)")
    resources_per_trial: Resources = Field(default_factory=Resources, description="what one trial asks Ray for")
    time_budget_s: float | None = Field(None, gt=0, description="wall-clock limit of the search; live trials are cut")
    max_failures: int = Field(1, ge=0, description="retries of a crashed trial, from its last checkpoint")
    metric: Literal[METRICS] = Field("val_accuracy", description="what chooses: a validation metric (or train_loss)")
    mode: Literal["max", "min"] = Field("max", description="max for accuracy and F1, min for losses")
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec, description="checkpoints kept")
    storage: str = Field("results", description="local folder or a URI Ray's storage_path takes (s3://...)")
    seed: int | None = Field(0, description="seeds the search algorithm; trials keep train.seed")
    rounds: int = Field(1, ge=1, description="coarse-to-fine: each round narrows the space around the top-k")
    fuse: int | Literal["auto"] = Field(1, description=FUSE_HELP)
    refine: RefineSpec = Field(default_factory=lambda: RefineSpec(), description="how rounds narrow the space")
    lr_find: LrFindSpec = Field(default_factory=LrFindSpec, description="the LR range test's settings")
    final: FinalSpec = Field(default_factory=lambda: FinalSpec(), description="seed re-runs after the search")
    promote: PromoteSpec = Field(default_factory=PromoteSpec, description="what promotion asks of a candidate")
    tracking: TrackingSpec = Field(default_factory=TrackingSpec, description="where else the runs are logged")
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig, description="stage 0's masked-LM settings")
    stages: Stages = Field(default_factory=Stages, description="set by the YAML shorthands; see Stages")

    @field_validator("fuse", mode="before")
    @classmethod
    def _fuse_value(cls, value: Any) -> Any:
        return fuse_value(value)

    @property
    def members_per_trial(self) -> int | Literal["auto"]:
        """`fuse`, or for `fuse: auto` the K its pilot chose once it has run."""
        return self.stages.fuse_chosen if self.fuse == "auto" and self.stages.fuse_chosen else self.fuse

    @property
    def fused(self) -> bool:  # above 1, or auto until its pilot has picked K
        return self.members_per_trial != 1

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, raw: Any) -> Any:
        """`model.pretrained: {from_pretrain: true}` and `train.lr: {from_lr_find: true}` are input
        shorthand for a stage, never job values: they become `stages`."""
        raw, pretrain = _take_marker(raw, "model.pretrained", "from_pretrain", "a hub id, a folder")
        raw, lr_find = _take_marker(raw, "train.lr", "from_lr_find", "a number")
        if pretrain or lr_find:
            stages = raw.get("stages") if isinstance(raw.get("stages"), dict) else {}
            raw = {
                **raw,
                "stages": {
                    **stages,
                    **({"pretrain": True} if pretrain else {}),
                    **({"lr_find": True} if lr_find else {}),
                },
            }
        return raw

    @model_validator(mode="before")
    @classmethod
    def _scheduler_type_defaults_to_asha(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and isinstance(raw.get("scheduler"), dict) and "type" not in raw["scheduler"]:
            raw = {**raw, "scheduler": {"type": "asha", **raw["scheduler"]}}
        return raw

    @model_validator(mode="after")
    def _space_fits_the_trial_config(self, info: ValidationInfo) -> JobSpec:
        self._check_space_keys()
        searched = not (info.context or {}).get("fixed_only")  # caviar train uses none of the space
        if searched and self.stages.pretrain:
            self._check_shape_is_fixed("the pretrain stage")
        if searched and self.model.pretrained:
            self._check_shape_is_fixed(f"model.pretrained ({short(self.model.pretrained, 60)})")
        if self.stages.lr_find and "train.lr" in self.search_space:
            raise ValueError("search_space.train.lr: train.lr comes from lr-find in this job; drop one of them")
        if self.search == "grid" and (bad := [k for k, d in self.search_space.items() if d.kind in RANGE_KINDS]):
            raise ValueError(f"search_space.{bad[0]}: search: grid takes only grid or choice values")
        if self.search == "optuna" and (bad := [k for k, d in self.search_space.items() if d.kind == "grid"]):
            raise ValueError(f"search_space.{bad[0]}: search: optuna cannot sample a grid; use choice")
        if self.fused and (problem := fusion_problem(self)):
            raise ValueError(f"fuse: {self.fuse} {problem}")
        return self

    def _check_space_keys(self) -> None:
        """Each key names a trial value (or, searched, a pretraining setting) with valid values."""
        fixed, mutations = self.trial_config().model_dump(), getattr(self.scheduler, "mutations", {})
        for where, space in (("search_space", self.search_space), ("scheduler.mutations", mutations)):
            for key, dist in space.items():
                if not (where == "search_space" and key.startswith(pretrain_search.PREFIX)):
                    check_key(f"{where}.{key}", key, dist, fixed)
        pretrain_search.check(self)

    def _check_shape_is_fixed(self, source: str) -> None:
        """The network's shape comes from the pretrained weights: searching it would be silently ignored."""
        for key in self.search_space:
            if key in SHAPE_KEYS:
                raise ValueError(f"search_space.{key}: the network's shape comes from {source}; drop it")

    def trial_config(self) -> TrialConfig:
        return TrialConfig.model_validate(self.model_dump(include=set(TrialConfig.model_fields)))

    def trial_base(self) -> dict:
        """The fixed values a trial's sampled ones are laid over, and each pretraining setting's folder."""
        return {**self.trial_config().model_dump(), pretrain_search.PRETRAINED_BY: self.stages.pretrained_by}

    def with_pretrained(self, folder: str, by_setting: dict[str, str] | None = None) -> JobSpec:
        """The job after stage 0: fine-tune from `folder`, the pretraining it asked for (or, with
        pretrain.* searched, from the folder of the setting a trial drew)."""
        raw = self.model_dump(mode="json")
        raw["model"]["pretrained"] = folder
        raw["stages"] |= {"pretrain": False, "pretrained_by": by_setting or {}, "pretrained": folder}
        return JobSpec.model_validate(raw)

    def with_lr_range(self, base_lr: float, max_lr: float) -> JobSpec:
        """The job after its LR range test: lr searched log-uniformly inside [base_lr, max_lr], and a
        cyclical schedule bounded by the same pair."""
        raw = self.model_dump(mode="json")
        raw["search_space"]["train.lr"] = {"loguniform": [base_lr, max_lr]}
        raw["train"]["lr"] = max_lr
        raw["stages"] |= {"lr_find": False, "lr_range": [base_lr, max_lr]}
        if self.train.schedule == "cyclical":
            raw["train"]["base_lr"], raw["train"]["max_lr"] = base_lr, max_lr
        return JobSpec.model_validate(raw)

    def with_fuse_chosen(self, k: int) -> JobSpec:
        """The job after `fuse: auto`'s pilot: K members a trial (`fuse` stays auto, as written)."""
        raw = self.model_dump(mode="json")
        raw["stages"]["fuse_chosen"] = k
        return JobSpec.model_validate(raw)

    def without_search(self) -> JobSpec:
        """The job's fixed values alone (`caviar train`): no search space or mutations to check."""
        raw = self.model_dump(mode="json")
        raw["search_space"] = {}
        raw["scheduler"] = {"type": "fifo"}
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
