"""`caviar pretrain` and stage 0 of a tuning job: pretraining (masked-LM or ELECTRA, pretrain.objective)
into a folder fine-tuning starts from.

To run: caviar pretrain tune_jobs/nsmc_pretrained.yaml [--set pretrain.epochs=1] [--json]

The folder (results/pretrain/<name>-<time>/) is what `model.pretrained: <folder>` loads, exactly as
it loads klue/bert-base: config.json and model.safetensors from save_pretrained, the tokenizer,
plus pretrain.json (the card: what was read, the settings, the MLM loss curve), mlm_loss.png and
TensorBoard scalars under tensorboard/. The card is written last: a folder without one is unfinished.

A job with `model.pretrained: {from_pretrain: true}` pretrains once before its trials. The result is
found again by a key over (train texts, tokenizer, model shape, pretrain settings), so a second job
or a resume with the same four reuses the folder instead of pretraining again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from filelock import FileLock
from tensorboardX import SummaryWriter

from caviar.experiment import plots
from caviar.experiment.layout import PRETRAIN_CARD, PRETRAIN_PLOT, pretrain_root, timestamped
from caviar.job import pretrain_search
from caviar.job.schema import JobSpec
from caviar.tuning.stages.pretrain_store import found_on_store, made_on_store
from model.config import SHAPE_FIELDS
from model.data import Splits
from model.errors import UserError
from model.files import read_json_object, write_json_atomically
from model.mlm import pretrain
from model.remote import is_uri
from model.tokenizer import texts_key

log = logging.getLogger("caviar.pretrain")

KEY_VERSION = "mlm-v1"
LEARNED_MARGIN = 0.01  # ELECTRA: accuracy points above the all-"original" answer that count as learning
IDENTITY_KEYS = (*SHAPE_FIELDS, "dropout", "max_len")  # the model keys that decide the pretrained weights


@dataclass
class PretrainCard:
    """pretrain.json: what was read, the settings, the MLM loss and its curve."""

    key: str  # pretrain_key: what decides the weights
    job: str
    data_fingerprint: str
    texts: int
    texts_sha256: str
    not_read: dict  # reviews of validation, the promotion gate and test, which pretraining never sees
    steps: int
    mlm_loss: float  # ELECTRA: its generator's
    examples_per_s: float
    wall_s: float
    settings: dict
    model: dict
    vocab: int
    curve: list[dict] = field(default_factory=list)
    created: str = ""
    objective: str = "mlm"  # cards written before ELECTRA have none: they are MLM's
    disc_loss: float | None = None  # ELECTRA: the discriminator's loss over every token
    replaced_accuracy: float | None = None  # ELECTRA: how often it tells replaced from original
    original_share: float | None = None  # ELECTRA: the accuracy of answering "original" everywhere

    def as_json(self) -> dict:
        return asdict(self)

    @classmethod
    def read(cls, folder: Path) -> PretrainCard:
        """A finished folder's card; a damaged or foreign one is a one-line UserError."""
        raw = read_json_object(Path(folder) / PRETRAIN_CARD)
        try:
            return cls(**raw)
        except TypeError:
            raise UserError(f"{Path(folder) / PRETRAIN_CARD}: damaged, not a pretraining card") from None

    def unlearned(self) -> str | None:
        """ELECTRA only: why the discriminator learned nothing worth fine-tuning, if so. Within
        LEARNED_MARGIN of the all-"original" answer it has not learned to tell replaced tokens from
        original ones; such a folder fine-tuned to 50% on NSMC (docs/benchmarks.md)."""
        if self.objective != "electra" or self.original_share is None or self.replaced_accuracy is None:
            return None  # MLM, or a card from before the share was recorded
        if self.replaced_accuracy > self.original_share + LEARNED_MARGIN:
            return None
        return (
            f"the discriminator's replaced-token accuracy ({self.replaced_accuracy:.1%}) is no better than "
            f"answering 'original' everywhere ({self.original_share:.1%}): it has not learned to spot "
            "replacements, and its weights are unlikely to fine-tune well"
        )

    def describe(self, folder: Path) -> list[str]:
        losses = f"MLM loss {self.mlm_loss:.3f}"
        if self.objective == "electra":
            share = "" if self.original_share is None else f" (all-'original': {self.original_share:.1%})"
            losses = (
                f"ELECTRA: generator MLM loss {self.mlm_loss:.3f}, discriminator loss {self.disc_loss:.3f}, "
                f"replaced-token accuracy {self.replaced_accuracy:.1%}{share}"
            )
        warning = [f"warning: {why}"] if (why := self.unlearned()) else []
        return [
            f"{losses} after {self.steps} steps on {self.texts} train reviews, {self.wall_s:.0f}s",
            *warning,
            f"pretrained model: {folder}  (fine-tune it: --set model.pretrained={folder})",
        ]


@dataclass
class Stage0:
    """The folder a job's trials fine-tune, as stage 0 made or found it (caviar_pretrain.json)."""

    folder: str
    key: str
    reused: bool
    mlm_loss: float
    steps: int
    setting: dict = field(default_factory=dict)  # the searched pretrain values it was made for ({}: none)
    others: list[dict] = field(default_factory=list)  # the other searched settings' records

    def as_json(self) -> dict:
        return asdict(self)


def pretrain_key(job: JobSpec, splits: Splits) -> str:
    """Everything that decides the weights: the texts read, the tokenizer, the model's shape, the settings.
    How the steps compute (precision, like the device and thread count) is left out: the same recipe."""
    model = job.model.model_dump()
    identity = {
        "version": KEY_VERSION,
        "tokenizer": texts_key(splits.train.document.tolist(), job.model.vocab_size),
        "model": {k: model[k] for k in IDENTITY_KEYS},
        "pretrain": job.pretrain.model_dump(exclude=_not_in_key(job)),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


def _not_in_key(job: JobSpec) -> set[str]:
    """Settings that do not decide the weights; an MLM job leaves out ELECTRA's, so its key (and the
    folders found by it) stay what they were before ELECTRA."""
    electra = {"objective", "generator_scale", "disc_weight", "sample_temperature"}
    unused = electra if job.pretrain.objective == "mlm" else set()
    return {"log_every", "precision", *unused}


def run_pretrain(job: JobSpec, folder: Path, splits: Splits, progress: bool = True) -> PretrainCard:
    """Pretrain `job`'s model into `folder` (which exists and is empty); returns the card."""
    started = time.perf_counter()
    cfg = job.trial_config()
    writer = SummaryWriter(str(folder / "tensorboard"))

    def on_log(point: dict) -> None:
        for name, value in point.items():
            if name != "step":
                writer.add_scalar(name, value, point["step"])

    try:
        result = pretrain(cfg, job.pretrain, splits, on_log=on_log, progress=progress)
    finally:
        writer.close()
    result.net.save_pretrained(folder)
    result.tokenizer.save_pretrained(folder)
    if result.curve:
        plots.mlm_loss(result.curve, folder / PRETRAIN_PLOT)
    card = PretrainCard(
        key=pretrain_key(job, splits),
        job=job.name,
        data_fingerprint=splits.fingerprint,
        texts=result.texts,
        texts_sha256=result.texts_sha256,
        not_read={"validation": len(splits.val), "gate": len(splits.gate), "test": len(splits.test)},
        steps=result.steps,
        mlm_loss=result.mlm_loss,
        examples_per_s=result.examples_per_s,
        wall_s=time.perf_counter() - started,
        settings=job.pretrain.model_dump(mode="json"),
        model={k: v for k, v in job.model.model_dump(mode="json").items() if k in IDENTITY_KEYS},
        vocab=len(result.tokenizer),
        curve=result.curve,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        objective=result.objective,
        disc_loss=result.disc_loss,
        replaced_accuracy=result.replaced_accuracy,
        original_share=result.original_share,
    )
    write_json_atomically(folder / PRETRAIN_CARD, card.as_json())  # last: its presence marks a finished folder
    return card


def _made_or_found_on_store(job: JobSpec, splits: Splits, progress: bool, setting: dict, key: str) -> Stage0:

    if (found := found_on_store(job.storage, key, find_pretrained)) is not None:
        log.info("pretrained model found on the store for this data, tokenizer, shape and settings: %s", found[0])
        (uri, card), reused = found, True
    else:
        (uri, card), reused = made_on_store(job, splits, progress, key, run_pretrain), False
    if why := card.unlearned():
        log.warning("stage 0 (%s): %s", uri, why)
    return Stage0(folder=uri, key=key, reused=reused, mlm_loss=card.mlm_loss, steps=card.steps, setting=setting)


def find_pretrained(root: Path, key: str) -> tuple[Path, PretrainCard] | None:
    """The newest finished folder under `root` made with this key; unfinished or damaged ones are skipped."""
    found = None
    for folder in sorted(root.glob("*/")):
        if not (folder / PRETRAIN_CARD).is_file():
            continue  # unfinished, or another job's leftovers
        try:
            card = PretrainCard.read(folder)
        except UserError as err:
            log.warning("skipping %s", err)
            continue
        if card.key == key:
            found = (folder, card)
    return found


def pretrain_stage(job: JobSpec, splits: Splits, progress: bool = True) -> tuple[JobSpec, Stage0]:
    """Stage 0: the job with model.pretrained set to its pretraining folder, made now or found again.
    A job that searches pretrain.* values gets one folder per distinct setting, each found by its own
    key, and the table of them (stages.pretrained_by) that each trial's values choose from."""
    values = pretrain_search.settings(job)
    records = [_made_or_found(pretrain_search.applied(job, v), splits, progress, v) for v in values]
    if len(records) == 1 and not values[0]:
        return job.with_pretrained(records[0].folder), records[0]
    by_setting = {pretrain_search.setting_key(v): r.folder for v, r in zip(values, records, strict=True)}
    first = records[0]
    first.others = [r.as_json() for r in records[1:]]
    return job.with_pretrained(first.folder, by_setting), first


def _made_or_found(job: JobSpec, splits: Splits, progress: bool, setting: dict) -> Stage0:
    """One setting's folder. A lock over the pretrain root makes a second job that starts meanwhile
    wait, then reuse it."""
    key, root = pretrain_key(job, splits), pretrain_root(job.storage)
    if is_uri(job.storage):
        return _made_or_found_on_store(job, splits, progress, setting, key)
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / ".lock")):
        if (found := find_pretrained(root, key)) is not None:
            folder, card = found
            log.info("pretrained model found for this data, tokenizer, shape and settings: %s", folder)
            reused = True
        else:
            folder = root / f"{timestamped(job.name)}-{key[:6]}"  # two settings in one second: two folders
            folder.mkdir(parents=True, exist_ok=False)
            log.info("stage 0: %s pretraining into %s", job.pretrain.objective.upper(), folder)
            try:
                card, reused = run_pretrain(job, folder, splits, progress), False
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)  # never found again as if it were finished
                raise
    if why := card.unlearned():
        log.warning("stage 0 (%s): %s", folder, why)
    return Stage0(folder=str(folder), key=key, reused=reused, mlm_loss=card.mlm_loss, steps=card.steps, setting=setting)
