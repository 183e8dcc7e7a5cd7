"""Typed settings of one training run: data, model and training, each declared once with its default.

A tuning job (caviar.spec.JobSpec) extends TrialConfig with the search space and the scheduler;
every trial is a TrialConfig with the sampled values filled in.
"""

from __future__ import annotations

import re
import types
import typing
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from model.errors import UserError

# one rule for every name that becomes a folder: run, experiment and registry names
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
NAME_RULE = "1 to 100 of A-Z a-z 0-9 _ . -, starting with a letter or digit"
Precision = Literal["auto", "fp32", "bf16"]
PRECISION_HELP = "bf16 autocast of the steps: auto = on for CUDA, off for CPU; bf16 = on (fp32 weights)"
# what every evaluation reports (model/loop.py), under the same names in Ray, TensorBoard and the leaderboard
METRICS = ("val_accuracy", "val_loss", "val_f1", "train_loss")
# the network's shape: what pretrained weights bring with them, and what a search may not vary then
SHAPE_FIELDS = ("vocab_size", "layers", "hidden", "heads", "intermediate")


def check_safe_name(name: str, what: str = "name") -> str:
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name):
        raise UserError(f"{what} {str(name)[:60]!r}: use {NAME_RULE}")
    return name


FIELD_MARK = "@"  # "@key: message" from a model validator: the message is about that key (job.loading.describe)


def _kinds(annotation) -> set:
    """The plain types a field's annotation admits: {int, NoneType} for `int | None`."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return set().union(*(_kinds(a) for a in typing.get_args(annotation)))
    if typing.get_origin(annotation) is typing.Literal:
        return {type(a) for a in typing.get_args(annotation)}
    return {annotation}


class Strict(BaseModel):
    """Unknown keys are errors: a typo in a job must never silently fall back to a default. And a
    boolean is no number, nor a number a boolean: `batch_size: true` is refused, not read as 1."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _booleans_are_booleans(cls, raw):
        """A model validator, not a field one: pydantic allows no field validator on a tagged union's tag."""
        if not isinstance(raw, dict):
            return raw
        for name, value in raw.items():
            field = cls.model_fields.get(name)
            if field is None or value is None:
                continue
            kinds = _kinds(field.annotation)
            if isinstance(value, bool) and bool not in kinds and kinds & {int, float}:
                raise ValueError(f"{FIELD_MARK}{name}: expected a number, got true/false")
            if kinds - {type(None)} == {bool} and not isinstance(value, bool):
                raise ValueError(f"{FIELD_MARK}{name}: expected true or false")
        return raw


class DataConfig(Strict):
    dir: str | None = Field(None, description="folder holding ratings_train.txt/ratings_test.txt; else NSMC_DIR")
    val_fraction: float = Field(
        0.1, gt=0, lt=1, description="stratified share held out for validation, of the reviews outside the gate"
    )
    gate: float = Field(
        0.05,
        ge=0,
        lt=0.5,
        description="share of the train file held out for `caviar promote` alone (0: no gate), chosen by "
        "a hash of each review, so no run trains on a gate review; the gate decides what replaces the served model",
    )
    limit: int | None = Field(
        None, gt=1, description="stratified subset of the reviews outside the gate, to train and validate (quick jobs)"
    )
    test_limit: int | None = Field(None, gt=1, description="stratified subset of the test file (quick jobs)")
    seed: int = Field(0, description="split seed; fixed across trials so they share one validation set")
    download_url: str = Field(
        "https://raw.githubusercontent.com/e9t/nsmc/master", description="where to fetch NSMC when no copy is found"
    )
    # set by caviar, never by a job file (caviar/job/resolved_keys.py): what the run read, recorded
    fingerprint: str | None = Field(
        None,
        description="sha256 of both files; a run records it, and reading the data again checks it",
        json_schema_extra={"set_by_caviar": True},
    )
    train_fingerprint: str | None = Field(
        None,
        description="sha256 of the train file alone: what the gate checks without opening the test file",
        json_schema_extra={"set_by_caviar": True},
    )
    split: int | None = Field(
        None,
        ge=1,
        le=2,
        description="how the train file was split (model/split.py); a run records the version it used",
        json_schema_extra={"set_by_caviar": True},
    )


class ModelConfig(Strict):
    pretrained: str | None = Field(
        None,
        description="hub id, local folder or folder on object storage (s3://...), e.g. klue/bert-base; None = scratch",
    )
    vocab_size: int = Field(16000, ge=128, le=1_000_000, description="WordPiece vocabulary trained on the train split")
    layers: int = Field(2, ge=1, le=64, description="transformer layers of the from-scratch BERT (1 to 64)")
    hidden: int = Field(256, ge=8, le=8192, description="hidden width, 8 to 8192; a multiple of heads")
    heads: int = Field(4, ge=1, le=128, description="attention heads (1 to 128)")
    intermediate: int = Field(1024, ge=8, le=65536, description="feed-forward width (8 to 65536)")
    dropout: float = Field(
        0.1, ge=0, lt=1, description="hidden and attention dropout (a pretrained model takes it too)"
    )
    max_len: int = Field(
        128, ge=8, le=8192, description="tokens kept per review (8 to 8192); NSMC reviews are < 140 characters"
    )
    head: Literal["linear", "mlp"] = Field("linear", description="classifier over the pooled [CLS]")
    head_hidden: int = Field(256, ge=1, description="width of the mlp head")
    head_dropout: float = Field(0.1, ge=0, lt=1, description="dropout inside the mlp head")
    freeze_base: bool = Field(False, description="train only the head (pretrained feature extraction)")

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> ModelConfig:
        if self.pretrained is None and self.hidden % self.heads:
            raise ValueError(f"model.hidden ({self.hidden}) must be divisible by model.heads ({self.heads})")
        return self


class TrainConfig(Strict):
    optimizer: Literal["adamw", "sgd"] = Field("adamw", description="adamw, or sgd with momentum")
    lr: float = Field(1e-3, gt=0, description="peak learning rate (after lr_scaling)")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW's moment decay rates")
    eps: float = Field(1e-8, gt=0, description="AdamW's denominator guard")
    weight_decay: float = Field(0.01, ge=0, description="decoupled weight decay, on matrices only")
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd only")
    schedule: Literal["constant", "linear", "cosine", "cyclical"] = Field(
        "linear", description="lr schedule: warmup then constant, linear or cosine decay; or cyclical"
    )
    warmup_ratio: float = Field(0.06, ge=0, lt=1, description="share of all steps spent warming up")
    base_lr: float | None = Field(None, gt=0, description="cyclical: lower bound (default lr / 10)")
    max_lr: float | None = Field(None, gt=0, description="cyclical: upper bound (default lr)")
    cyclical_mode: Literal["triangular", "triangular2"] = Field(
        "triangular", description="cyclical: triangular2 halves the amplitude every cycle"
    )
    cycle_epochs: float = Field(0.5, gt=0, description="cyclical: epochs from base_lr up to max_lr")
    batch_size: int = Field(64, ge=1, description="reviews per optimizer step")
    lr_scaling: Literal["none", "linear", "sqrt"] = Field("none", description="scale lr with batch_size")
    reference_batch_size: int = Field(64, ge=1, description="the batch size at which lr is meant as given")
    epochs: int = Field(1, ge=1, description="passes over the train split")
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps (smoke runs)")
    eval_every: float = Field(
        0.25, gt=0, le=1, description="fraction of an epoch between evaluations (round(1/x) per epoch)"
    )
    patience: int | None = Field(None, ge=1, description="evaluations without val_loss improvement before stopping")
    grad_clip: float | None = Field(1.0, gt=0, description="clip the gradient norm to this; null = off")
    seed: int = Field(42, description="batch order of the run; init and dropout too, unless init_seed is set")
    init_seed: int | None = Field(None, description="init and dropout seed apart from the batch order; null = seed")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="smooths the training loss's targets (not val_loss)")
    num_threads: int | None = Field(None, ge=1, description="torch threads; default = CPUs given to the run")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = cuda when torch sees a GPU")
    compile: Literal["auto", "on", "off"] = Field(
        "auto", description="torch.compile the model: auto = on for CUDA, off for CPU (compiling costs 20-50 s there)"
    )
    precision: Precision = Field("auto", description=PRECISION_HELP)

    @field_validator("compile", mode="before")
    @classmethod
    def _compile_as_written(cls, value):
        """YAML reads the documented `on` and `off` as booleans: take them as written."""
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value

    @model_validator(mode="after")
    def _cyclical_bounds(self) -> TrainConfig:
        if self.base_lr is not None and self.max_lr is not None and self.base_lr >= self.max_lr:
            raise ValueError(f"train.base_lr ({self.base_lr}) must be below train.max_lr ({self.max_lr})")
        return self

    def effective_lr(self) -> float:
        """The seed's rule of thumb: a larger batch wants a larger learning rate."""
        ratio = self.batch_size / self.reference_batch_size
        return self.lr * {"none": 1.0, "linear": ratio, "sqrt": ratio**0.5}[self.lr_scaling]


class PretrainConfig(Strict):
    """Pretraining of the job's from-scratch BERT on the train split's texts (`caviar pretrain`):
    masked-LM, or ELECTRA's replaced-token detection (model/electra.py)."""

    objective: Literal["mlm", "electra"] = Field(
        "mlm", description="mlm: masked-LM; electra: a small generator fills masked tokens, the model spots them"
    )
    generator_scale: float = Field(0.25, gt=0, le=1, description="electra: the generator's width over the model's")
    disc_weight: float = Field(50.0, gt=0, description="electra: the discriminator loss's weight beside the MLM loss")
    sample_temperature: float = Field(
        1.0, gt=0, description="electra: replacements drawn from softmax(generator logits / this); > 1: easier ones"
    )

    epochs: float = Field(3, gt=0, description="passes over the train split's texts")
    max_steps: int | None = Field(None, ge=1, description="stop after this many steps (smoke runs)")
    lr: float = Field(5e-4, gt=0, description="AdamW peak learning rate")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay")
    batch_size: int = Field(128, ge=2, description="reviews per step")
    warmup_ratio: float = Field(0.06, ge=0, lt=1, description="share of all steps spent warming up (then linear decay)")
    mask_probability: float = Field(
        0.15, gt=0, lt=1, description="tokens chosen per review; of them 80% [MASK], 10% random, 10% kept"
    )
    grad_clip: float | None = Field(1.0, gt=0, description="clip the gradient norm to this; null = off")
    seed: int = Field(0, description="init and masking seed")
    log_every: int = Field(50, ge=1, description="steps per point of the MLM loss curve (card, TensorBoard)")
    precision: Precision = Field("auto", description=PRECISION_HELP)


class TrialConfig(Strict):
    """Everything one training run needs; what `caviar train` runs and what each Ray trial gets."""

    name: str = Field("run", description=NAME_RULE)
    data: DataConfig = Field(DataConfig(), description="where NSMC is and how it is split")
    model: ModelConfig = Field(ModelConfig(), description="the classifier's shape, or the pretrained encoder")
    train: TrainConfig = Field(TrainConfig(), description="optimizer, schedule and loop")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        if not SAFE_NAME.fullmatch(name):
            raise ValueError(f"use {NAME_RULE}")
        return name
