"""`caviar pretrain` and stage 0 of a tuning job: MLM pretraining into a folder fine-tuning starts from.

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
from pathlib import Path

from filelock import FileLock
from tensorboardX import SummaryWriter

from caviar.experiment import plots
from caviar.experiment.layout import Storage, timestamped
from caviar.job.schema import JobSpec
from model.data import Splits, load_splits
from model.errors import UserError
from model.files import write_json_atomically
from model.mlm import pretrain
from model.tokenizer import texts_key

log = logging.getLogger("caviar.pretrain")

CARD = "pretrain.json"
KEY_VERSION = "mlm-v1"
SHAPE_KEYS = ("vocab_size", "layers", "hidden", "heads", "intermediate", "dropout", "max_len")


def pretrain_root(job: JobSpec) -> Path:
    """<storage>/pretrain: beside the experiments, so every node of a cluster with shared storage sees it."""
    storage = Storage.of(job.storage)
    return Path("results" if storage.is_remote else storage.root) / "pretrain"


def pretrain_key(job: JobSpec, splits: Splits) -> str:
    """Everything that decides the weights: the texts read, the tokenizer, the model's shape, the settings.
    How the steps compute (precision, like the device and thread count) is left out: the same recipe."""
    model = job.model.model_dump()
    identity = {
        "version": KEY_VERSION,
        "tokenizer": texts_key(splits.train.document.tolist(), job.model.vocab_size),
        "model": {k: model[k] for k in SHAPE_KEYS},
        "pretrain": job.pretrain.model_dump(exclude={"log_every", "precision"}),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


def run_pretrain(job: JobSpec, folder: Path, splits: Splits | None = None, progress: bool = True) -> dict:
    """Pretrain `job`'s model into `folder` (which exists and is empty); returns the card."""
    started = time.perf_counter()
    cfg = job.trial_config()
    splits = splits or load_splits(cfg.data)
    writer = SummaryWriter(str(folder / "tensorboard"))

    def on_log(point: dict) -> None:
        writer.add_scalar("mlm_loss", point["mlm_loss"], point["step"])
        writer.add_scalar("lr", point["lr"], point["step"])

    try:
        result = pretrain(cfg, job.pretrain, splits, on_log=on_log, progress=progress)
    finally:
        writer.close()
    result.net.save_pretrained(folder)
    result.tokenizer.save_pretrained(folder)
    if result.curve:
        plots.mlm_loss(result.curve, folder / "mlm_loss.png")
    card = {
        "key": pretrain_key(job, splits),
        "job": job.name,
        "data_fingerprint": splits.fingerprint,
        "texts": result.texts,
        "texts_sha256": result.texts_sha256,
        "not_read": {"validation": len(splits.val), "test": len(splits.test)},
        "steps": result.steps,
        "mlm_loss": result.mlm_loss,
        "examples_per_s": result.examples_per_s,
        "wall_s": time.perf_counter() - started,
        "settings": job.pretrain.model_dump(mode="json"),
        "model": {k: v for k, v in job.model.model_dump(mode="json").items() if k in SHAPE_KEYS},
        "vocab": len(result.tokenizer),
        "curve": result.curve,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json_atomically(folder / CARD, card)  # last: its presence marks a finished folder
    return card


def read_card(folder: Path) -> dict | None:
    try:
        card = json.loads((Path(folder) / CARD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return card if isinstance(card, dict) else None


def find_pretrained(root: Path, key: str) -> Path | None:
    """The newest finished folder under `root` made with this key."""
    found = [f for f in sorted(root.glob("*/")) if (card := read_card(f)) and card.get("key") == key]
    return found[-1] if found else None


def pretrain_stage(job: JobSpec, splits: Splits | None = None, progress: bool = True) -> tuple[JobSpec, dict]:
    """Stage 0: the job with model.pretrained set to its pretraining folder, made now or found again.
    A lock over the pretrain root makes a second job that starts meanwhile wait, then reuse it."""
    if not job.from_pretrain:
        raise UserError("model.pretrained: this job does not ask for {from_pretrain: true}")
    splits = splits or load_splits(job.data)
    key, root = pretrain_key(job, splits), pretrain_root(job)
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / ".lock")):
        folder = find_pretrained(root, key)
        if folder is not None:
            log.info("pretrained model found for this data, tokenizer, shape and settings: %s", folder)
            card, reused = read_card(folder), True
        else:
            folder = root / f"{timestamped(job.name)}-{key[:6]}"  # two settings in one second: two folders
            folder.mkdir(parents=True, exist_ok=False)
            log.info("stage 0: masked-LM pretraining into %s", folder)
            try:
                card, reused = run_pretrain(job, folder, splits, progress), False
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)  # never found again as if it were finished
                raise
    record = {"folder": str(folder), "key": key, "reused": reused, "mlm_loss": card["mlm_loss"], "steps": card["steps"]}
    return job.with_pretrained(str(folder)), record
