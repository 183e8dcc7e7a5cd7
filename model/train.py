"""Train one configuration of the sentiment model, reporting metrics and a checkpoint at every evaluation.

To run: caviar train tune_jobs/quickstart.yaml   (this function is also what every Ray trial runs)

`report(metrics, checkpoint_dir)` is the only link to the outside: the CLI keeps the best
checkpoint, Ray Tune forwards both to tune.report. The checkpoint folder lives only during the call.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from model.batches import DeviceSplit, encode_cached
from model.checkpoint import Loaded, fill_checkpoint, load_checkpoint
from model.config import TrialConfig
from model.data import Splits, load_splits
from model.device import maybe_compile, pick_device, seed_everything, set_threads
from model.files import sweep_dead_temp_checkpoints, temp_checkpoint_dir
from model.loop import NonFiniteLoss, Report, Run, Trainer, TrainResult
from model.network import build_network, pretrained_origin
from model.tokenizer import build_tokenizer

__all__ = ["NonFiniteLoss", "Report", "Run", "TrainResult", "prepare", "prepare_members", "train"]


def prepare(cfg: TrialConfig, splits: Splits | None = None, loaded: Loaded | None = None) -> Run:
    """Threads, device and seeds set; the network and tokenizer built (or taken from a loaded
    checkpoint); the splits encoded."""
    set_threads(cfg.train.num_threads)
    device = pick_device(cfg.train.device)
    seed_everything(init_seed(cfg))
    splits = splits or load_splits(cfg.data)
    if loaded is not None:
        net, tokenizer = loaded.net, loaded.tokenizer
    else:
        tokenizer = build_tokenizer(cfg.model, splits.train.document.tolist())
        net = build_network(cfg.model, len(tokenizer), tokenizer.pad_token_id)
    net.to(device).train()
    train_set = encode_cached(tokenizer, splits.train.document, splits.train.label, cfg.model.max_len)
    val_set = encode_cached(tokenizer, splits.val.document, splits.val.label, cfg.model.max_len)
    step_net = maybe_compile(net, cfg.train.compile, device)
    train_split, val_split = DeviceSplit(train_set, device), DeviceSplit(val_set, device)
    return Run(net, tokenizer, train_split, val_split, device, splits, step_net, cfg.train.precision)


def init_seed(cfg: TrialConfig) -> int:
    return cfg.train.seed if cfg.train.init_seed is None else cfg.train.init_seed


def prepare_members(cfgs: list[TrialConfig], splits: Splits | None = None) -> tuple[Run, list]:
    """A fused group's one Run (device, tokenizer, the splits on the device: its members share one
    data stream, so the data is there once, not once per member) and each member's network, built
    from its own init seed exactly as `prepare` would build it alone."""
    run = prepare(cfgs[0], splits)
    nets = [run.net]
    for cfg in cfgs[1:]:
        seed_everything(init_seed(cfg))
        nets.append(build_network(cfg.model, len(run.tokenizer), run.tokenizer.pad_token_id).to(run.device).train())
    return run, nets


def train(
    cfg: TrialConfig,
    *,
    splits: Splits | None = None,
    report: Report | None = None,
    resume_from: Path | None = None,
    replay_after_step: int | None = None,
    progress: bool = False,
    started: float | None = None,
) -> TrainResult:
    """Train `cfg` to its end (or patience), calling `report` at every evaluation.

    `resume_from`: continue from a checkpoint folder (a crash, a driver restart, a PBT exploit).
    `replay_after_step`: the driver's record ends at this step (-1: it holds none), short of the
    checkpoint (it was killed in between), so the evaluations after it are reported again, from the
    history the checkpoint keeps, before going on; otherwise a resumed run reports only new
    evaluations, and a run whose checkpoint is already its last reports nothing at all.
    `started`: a time.perf_counter() reading; metrics report `startup_s`, from it to the first step."""
    started = time.perf_counter() if started is None else started
    sweep_dead_temp_checkpoints()  # what a killed run left in the temp folder
    saved = load_checkpoint(resume_from, with_state=True) if resume_from is not None else None
    run = prepare(cfg, splits, saved)
    trainer = Trainer(cfg, run, progress, started=started)
    if saved is not None and saved.trainer_state is not None:
        trainer.resume(saved.trainer_state, saved.config.train)
        if replay_after_step is not None and report is not None:
            lost = [row for row in trainer.history if row["step"] > replay_after_step]
            for row in lost:  # only the last has its checkpoint: the checkpoint folder is the last's
                report(row, resume_from if row is lost[-1] else None)

    origin = pretrained_origin(cfg.model)

    def keep(metrics: dict) -> None:
        if report is not None:
            _report_with_checkpoint(report, metrics, run, cfg, trainer, origin)

    return trainer.fit(on_evaluation=keep)


def _report_with_checkpoint(
    report: Report, metrics: dict, run: Run, cfg: TrialConfig, trainer: Trainer, origin: dict | None
) -> None:
    folder = temp_checkpoint_dir()
    try:
        meta = {"data_fingerprint": run.splits.fingerprint, "metrics": metrics, "pretrained": origin}
        state = trainer.state_dict()
        fill_checkpoint(folder, run.net, run.tokenizer, cfg, meta, state, trainer.val_predictions)
        report(metrics, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
