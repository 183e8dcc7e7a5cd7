"""Train one configuration of the sentiment model, reporting metrics and a checkpoint at every evaluation.

To run: caviar train tune_jobs/quickstart.yaml   (this function is also what every Ray trial runs)

`report(metrics, checkpoint_dir)` is the only link to the outside: the CLI keeps the best
checkpoint, Ray Tune forwards both to tune.report. The checkpoint folder lives only during the call.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from model.batches import collate, encode, epoch_batches
from model.checkpoint import fill_checkpoint, load_checkpoint
from model.config import TrialConfig
from model.data import Splits, load_splits
from model.errors import UserError
from model.evaluate import cross_entropy, evaluate
from model.network import build_network
from model.schedule import build_optimizer, build_schedule
from model.tokenizer import build_tokenizer

Report = Callable[[dict, Path], None]
EVAL_BATCH = 256
MIN_IMPROVEMENT = 1e-4  # val_loss must drop by this much to reset the patience counter


class NonFiniteLoss(UserError):
    """The loss went NaN or infinite: the run stops before it can save (and so promote) such weights."""


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)
    steps: int = 0
    examples_per_s: float = 0.0
    stopped_early: bool = False

    def best(self, metric: str = "val_accuracy", mode: str = "max") -> dict:
        pick = max if mode == "max" else min
        return pick(self.history, key=lambda row: row[metric]) if self.history else {}


def available_cpus() -> int:
    """CPUs this process may use: Ray sets OMP_NUM_THREADS to a trial's share."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device: cuda was asked for, but torch sees no CUDA GPU here")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class Run:
    """What a training loop works on, built once: network, tokenizer, encoded splits, device."""

    net: torch.nn.Module
    tokenizer: object
    train_set: object
    val_set: object
    device: torch.device
    splits: Splits
    state: dict | None = None  # trainer state when resuming
    resumed_train_cfg: object = None


def prepare(cfg: TrialConfig, splits: Splits | None = None, resume_from: Path | None = None) -> Run:
    tc = cfg.train
    torch.set_num_threads(tc.num_threads or available_cpus())
    device = pick_device(tc.device)
    seed_everything(tc.seed)
    splits = splits or load_splits(cfg.data)
    state, resumed_train_cfg = None, None
    if resume_from is not None:
        loaded = load_checkpoint(resume_from, with_state=True)
        net, tokenizer, state = loaded.net, loaded.tokenizer, loaded.trainer_state
        resumed_train_cfg = loaded.config.train
    else:
        tokenizer = build_tokenizer(cfg.model, splits.train.document.tolist())
        net = build_network(cfg.model, len(tokenizer), tokenizer.pad_token_id)
    net.to(device).train()
    train_set = encode(tokenizer, splits.train.document, splits.train.label, cfg.model.max_len)
    val_set = encode(tokenizer, splits.val.document, splits.val.label, cfg.model.max_len)
    return Run(net, tokenizer, train_set, val_set, device, splits, state, resumed_train_cfg)


def train_step(run: Run, rows, optimizer, grad_clip: float | None) -> float:
    """One optimizer step on the reviews `rows`; returns the batch loss."""
    batch = {
        k: v.to(run.device, non_blocking=True)
        for k, v in collate(run.train_set, rows, run.tokenizer.pad_token_id).items()
    }
    with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.device.type == "cuda"):
        logits = run.net(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    loss = cross_entropy(logits, batch["labels"])
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(run.net.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def train(
    cfg: TrialConfig,
    *,
    splits: Splits | None = None,
    report: Report | None = None,
    resume_from: Path | None = None,
    replay_last_report: bool = False,
    progress: bool = False,
) -> TrainResult:
    """`replay_last_report`: the checkpoint's own evaluation never reached the driver's record (it was
    killed in between), so report it again before going on; otherwise a resumed run reports only new
    evaluations, and a run whose checkpoint is already its last reports nothing at all."""
    tc = cfg.train
    run = prepare(cfg, splits, resume_from)
    net, tokenizer, train_set, val_set, device = run.net, run.tokenizer, run.train_set, run.val_set, run.device
    splits, state, resumed_train_cfg = run.splits, run.state, run.resumed_train_cfg
    pad_id = tokenizer.pad_token_id

    steps_per_epoch = math.ceil(len(train_set) / tc.batch_size)
    total_steps = (
        tc.epochs * steps_per_epoch if tc.max_steps is None else min(tc.max_steps, tc.epochs * steps_per_epoch)
    )
    # evaluations fall at fixed places in every epoch (and its end), so a job's max_t is exactly
    # epochs x evaluations-per-epoch
    per_epoch = max(1, round(1 / tc.eval_every))
    eval_points = {max(1, round(steps_per_epoch * k / per_epoch)) for k in range(1, per_epoch + 1)}
    optimizer = build_optimizer(net, tc)
    scheduler = build_schedule(optimizer, tc, total_steps, steps_per_epoch)

    result = TrainResult()
    step, best_val_loss, bad_evals, seen, train_time = 0, math.inf, 0, 0, 0.0
    if state is not None:
        step, best_val_loss, bad_evals = state["step"], state["best_val_loss"], state["bad_evals"]
        seen, train_time, result.history = state["seen"], state["train_time"], state["history"]
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        if _same_recipe(resumed_train_cfg, tc):
            scheduler.load_state_dict(state["scheduler"])
        else:
            scheduler = _adopt_new_hyperparameters(net, optimizer, tc, total_steps, steps_per_epoch, step)
        finished = bool(result.history) and bool(result.history[-1].get("done_training"))
        result.stopped_early = finished and step < total_steps
        if replay_last_report and result.history and report is not None:
            report(result.history[-1], resume_from)

    window_loss, window_n, window_seen, window_time = 0.0, 0, 0, 0.0
    while step < total_steps and not result.stopped_early:
        epoch, offset = divmod(step, steps_per_epoch)
        batches = epoch_batches(train_set, tc.batch_size, tc.seed, epoch)
        bar = tqdm(
            total=min(steps_per_epoch, total_steps - epoch * steps_per_epoch),
            initial=offset,
            desc=f"epoch {epoch + 1}/{tc.epochs}",
            unit="batch",
            disable=not progress,
            file=sys.stderr,
            dynamic_ncols=True,
        )
        for rows in batches[offset:]:
            started = time.perf_counter()
            loss = train_step(run, rows, optimizer, tc.grad_clip)
            if not math.isfinite(loss):
                raise NonFiniteLoss(
                    f"train loss became {loss} at step {step + 1} (lr {scheduler.get_last_lr()[0]:.3g}); "
                    "no checkpoint was written from here on: lower train.lr or keep train.grad_clip on"
                )
            scheduler.step()
            elapsed = time.perf_counter() - started
            step += 1
            window_loss += loss
            window_n += 1
            window_seen += len(rows)
            window_time += elapsed
            bar.update(1)
            bar.set_postfix(loss=f"{window_loss / window_n:.4f}", refresh=False)

            if step - epoch * steps_per_epoch not in eval_points and step != total_steps:
                continue
            seen, train_time = seen + window_seen, train_time + window_time
            val = evaluate(net, val_set, EVAL_BATCH, pad_id, device)
            metrics = {
                "epoch": round(step / steps_per_epoch, 4),
                "step": step,
                "train_loss": window_loss / window_n,
                **{k: v for k, v in val.as_dict("val").items() if k != "val_confusion"},
                "lr": scheduler.get_last_lr()[0],
                "examples_per_s": window_seen / window_time,
            }
            if val.loss < best_val_loss - MIN_IMPROVEMENT:
                best_val_loss, bad_evals = val.loss, 0
            else:
                bad_evals += 1
            result.stopped_early = tc.patience is not None and bad_evals >= tc.patience
            # True on the run's own last evaluation; a run a scheduler stops never reports it
            metrics["done_training"] = result.stopped_early or step >= total_steps
            result.history.append(metrics)
            if report is not None:
                trainer_state = {
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state(),
                    "step": step,
                    "best_val_loss": best_val_loss,
                    "bad_evals": bad_evals,
                    "seen": seen,
                    "train_time": train_time,
                    "history": result.history,
                }
                _report_with_checkpoint(report, metrics, net, tokenizer, cfg, splits.fingerprint, trainer_state)
            window_loss, window_n, window_seen, window_time = 0.0, 0, 0, 0.0
            if result.stopped_early or step >= total_steps:
                break
        bar.close()

    result.steps = step
    result.examples_per_s = seen / train_time if train_time else 0.0
    return result


def _same_recipe(a, b) -> bool:
    ignore = {"num_threads", "device"}
    return a.model_dump(exclude=ignore) == b.model_dump(exclude=ignore)


def _adopt_new_hyperparameters(net, optimizer, tc, total_steps: int, steps_per_epoch: int, step: int):
    """PBT exploit: the donor's weights and Adam moments, with this trial's (mutated) hyperparameters,
    and a schedule fast-forwarded to the current step."""
    for group, fresh in zip(optimizer.param_groups, build_optimizer(net, tc).param_groups, strict=True):
        group.update({k: v for k, v in fresh.items() if k != "params"})
        group.pop("initial_lr", None)
    scheduler = build_schedule(optimizer, tc, total_steps, steps_per_epoch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()": intended here
        for _ in range(step):
            scheduler.step()
    return scheduler


def _report_with_checkpoint(report: Report, metrics, net, tokenizer, cfg, data_fingerprint, trainer_state) -> None:
    folder = Path(tempfile.mkdtemp(prefix="caviar-ckpt-"))
    try:
        meta = {"data_fingerprint": data_fingerprint, "metrics": metrics}
        fill_checkpoint(folder, net, tokenizer, cfg, meta, trainer_state)
        report(metrics, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
