"""The training loop as an object: one optimizer step, one evaluation, the whole fit, and a state that
saves and loads as one dict (the checkpoint's trainer_state.pt).

Resume and the PBT hand-over are named methods; the loop itself (`fit`) only steps, evaluates at
fixed places and asks `report` to keep a checkpoint. Nothing here knows about Ray.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import PreTrainedTokenizerBase

from model.bars import progress_bar
from model.batches import DeviceSplit, epoch_batches
from model.config import TrainConfig, TrialConfig
from model.data import Splits
from model.device import autocast
from model.errors import UserError
from model.evaluate import EVAL_BATCH, cross_entropy, scored
from model.predictions import Predictions
from model.schedule import build_optimizer, build_schedule

Report = Callable[[dict, Path | None], None]  # (metrics, checkpoint folder or None): the one link out
MIN_IMPROVEMENT = 1e-4  # val_loss must drop by this much to reset the patience counter


class NonFiniteLoss(UserError):
    """The loss went NaN or infinite: the run stops before it can save (and so promote) such weights."""


@dataclass
class Run:
    """What a training loop works on, built once: network, tokenizer, encoded splits, device."""

    net: torch.nn.Module  # the plain module: what checkpoints save
    tokenizer: PreTrainedTokenizerBase
    train_set: DeviceSplit
    val_set: DeviceSplit
    device: torch.device
    splits: Splits
    step_net: torch.nn.Module | None = None  # what the steps call: `net`, or `net` compiled
    precision: str = "auto"  # train.precision: bf16 autocast of the steps (model.device.autocast)

    def __post_init__(self):
        if self.step_net is None:
            self.step_net = self.net


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)
    steps: int = 0
    examples_per_s: float = 0.0
    stopped_early: bool = False


class _Window:
    """Train loss and throughput since the last evaluation. The loss adds up on the device: reading
    it is a host sync, done at evaluations and for the progress bar every BAR_EVERY steps only."""

    def __init__(self):
        self.loss, self.steps, self.examples, self.started = 0.0, 0, 0, time.perf_counter()

    def add(self, loss: torch.Tensor, examples: int) -> None:
        self.loss, self.steps, self.examples = self.loss + loss, self.steps + 1, self.examples + examples

    def mean_loss(self) -> float:
        return float(self.loss) / max(1, self.steps)


BAR_EVERY = 50  # steps between progress-bar loss readings (each one waits for the device)


def train_step(
    run: Run, width: int, rows: torch.Tensor, optimizer, grad_clip: float | None, label_smoothing: float = 0.0
) -> torch.Tensor:
    """One optimizer step on the reviews `rows` (padded to `width`); returns the batch loss, on the device."""
    batch = run.train_set.batch(width, rows)
    with autocast(run.device, run.precision):
        logits = run.step_net(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    loss = cross_entropy(logits, batch["labels"], label_smoothing)
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(run.net.parameters(), grad_clip, foreach=True)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


@dataclass(frozen=True)
class EvaluationPlan:
    steps_per_epoch: int
    total_steps: int
    eval_points: frozenset[int]  # steps within an epoch (1-based) after which the run evaluates


def evaluation_plan(tc: TrainConfig, train_examples: int) -> EvaluationPlan:
    """Evaluations fall at fixed places in every epoch (and its end), so a job's max_t is exactly
    epochs x evaluations-per-epoch; a fused group (model/fused.py) keeps the same plan."""
    steps_per_epoch = math.ceil(train_examples / tc.batch_size)
    total_steps = tc.epochs * steps_per_epoch
    if tc.max_steps is not None:
        total_steps = min(tc.max_steps, total_steps)
    per_epoch = max(1, round(1 / tc.eval_every))
    points = frozenset(max(1, round(steps_per_epoch * k / per_epoch)) for k in range(1, per_epoch + 1))
    return EvaluationPlan(steps_per_epoch, total_steps, points)


class Trainer:
    """Trains `run.net` with `cfg.train`, evaluating at fixed places in every epoch."""

    # the loop's own counters: with the optimizer, scheduler and RNG, all a resume needs
    STATE_KEYS = ("step", "best_val_loss", "bad_evals", "seen", "train_time", "history")

    def __init__(self, cfg: TrialConfig, run: Run, progress: bool = False, started: float | None = None):
        self.tc, self.run, self.progress = cfg.train, run, progress
        self.started, self.startup_s = started or time.perf_counter(), None
        plan = evaluation_plan(self.tc, len(run.train_set))
        self.steps_per_epoch, self.total_steps, self.eval_points = (
            plan.steps_per_epoch,
            plan.total_steps,
            plan.eval_points,
        )
        self.optimizer = build_optimizer(run.net, self.tc)
        self.scheduler = build_schedule(self.optimizer, self.tc, self.total_steps, self.steps_per_epoch)
        self.step, self.best_val_loss, self.bad_evals, self.seen, self.train_time = 0, math.inf, 0, 0, 0.0
        self.history: list[dict] = []
        self.stopped_early = False
        self.widths_seen: set[int] = set()
        self.compile_s = 0.0  # seconds in steps that compiled a new shape (0 when eager)
        self.val_predictions: Predictions | None = None  # the last evaluation's, per review

    # --- state -----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            **{key: getattr(self, key) for key in self.STATE_KEYS},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        for key in self.STATE_KEYS:
            setattr(self, key, state[key])
        self.optimizer.load_state_dict(state["optimizer"])
        if "scheduler" in state:
            self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])

    def resume(self, state: dict, saved_train: TrainConfig) -> None:
        """Continue from a checkpoint's state. Saved with other optimizer settings (a PBT exploit:
        the donor's weights, this trial's mutated hyperparameters), the hand-over keeps the donor's
        moments and fast-forwards a fresh schedule to the current step."""
        if _same_recipe(saved_train, self.tc):
            self.load_state_dict(state)
        else:
            self.load_state_dict({k: v for k, v in state.items() if k != "scheduler"})
            self._adopt_new_hyperparameters()
        finished = bool(self.history) and bool(self.history[-1].get("done_training"))
        self.stopped_early = finished and self.step < self.total_steps

    def _adopt_new_hyperparameters(self) -> None:
        fresh = build_optimizer(self.run.net, self.tc)
        for group, new in zip(self.optimizer.param_groups, fresh.param_groups, strict=True):
            group.update({k: v for k, v in new.items() if k != "params"})
            group.pop("initial_lr", None)
        self.scheduler = build_schedule(self.optimizer, self.tc, self.total_steps, self.steps_per_epoch)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()": intended here
            for _ in range(self.step):
                self.scheduler.step()

    @property
    def done(self) -> bool:
        return self.stopped_early or self.step >= self.total_steps

    # --- the loop ----------------------------------------------------------------------------------
    def train_one(self, width: int, rows: torch.Tensor) -> torch.Tensor:
        new_shape = self.run.step_net is not self.run.net and width not in self.widths_seen
        started = time.perf_counter() if new_shape else 0.0
        loss = train_step(self.run, width, rows, self.optimizer, self.tc.grad_clip, self.tc.label_smoothing)
        if new_shape:  # a compiled module compiles on the first call of each shape: paid once per trial
            self.widths_seen.add(width)
            self.compile_s += time.perf_counter() - started
        self.scheduler.step()
        self.step += 1
        if self.startup_s is None:  # set-up (data, tokenizer, network, first compile) until one step is done
            self.startup_s = time.perf_counter() - self.started
        return loss

    def check_finite(self, loss: float) -> None:
        """Checked whenever the loss is read (evaluations, the progress bar): a diverged run stops
        before its next checkpoint, so no NaN weights can be saved or promoted."""
        if not math.isfinite(loss):
            raise NonFiniteLoss(
                f"train loss became {loss} by step {self.step} (lr {self.scheduler.get_last_lr()[0]:.3g}); "
                "no checkpoint was written from here on: lower train.lr or keep train.grad_clip on"
            )

    def evaluate(self, window: _Window) -> dict:
        """Validation metrics plus the window's train loss; updates patience and the run's totals."""
        train_loss, seconds = window.mean_loss(), time.perf_counter() - window.started
        self.check_finite(train_loss)
        self.seen, self.train_time = self.seen + window.examples, self.train_time + seconds
        val, positive = scored(self.run.step_net, self.run.val_set, EVAL_BATCH)
        self.val_predictions = Predictions.of(self.run.val_set.data.labels, positive)  # kept with its checkpoint
        if val.loss < self.best_val_loss - MIN_IMPROVEMENT:
            self.best_val_loss, self.bad_evals = val.loss, 0
        else:
            self.bad_evals += 1
        self.stopped_early = self.tc.patience is not None and self.bad_evals >= self.tc.patience
        metrics = {
            "evaluation": len(self.history) + 1,  # counts on across resumes: the checkpoint keeps the history
            "epoch": round(self.step / self.steps_per_epoch, 4),
            "step": self.step,
            "train_loss": train_loss,
            **{k: v for k, v in val.as_dict("val").items() if k != "val_confusion"},
            "lr": self.scheduler.get_last_lr()[0],
            "examples_per_s": window.examples / seconds,
            "compile_s": self.compile_s,
            "startup_s": self.startup_s,
            # True on the run's own last evaluation; a run a scheduler stops never reports it
            "done_training": self.done,
            "stopped_by_patience": self.stopped_early,  # why a run ended before its last step
        }
        self.history.append(metrics)
        return metrics

    def fit(self, on_evaluation: Callable[[dict], None] | None = None) -> TrainResult:
        """Train to the end (or patience); `on_evaluation(metrics)` keeps each evaluation's checkpoint."""
        window = _Window()
        while not self.done:
            epoch, offset = divmod(self.step, self.steps_per_epoch)
            batches = epoch_batches(self.run.train_set.data, self.tc.batch_size, self.tc.seed, epoch)
            with self._bar(epoch, offset) as bar:
                for width, rows in self.run.train_set.plan(batches[offset:]):
                    window.add(self.train_one(width, rows), len(rows))
                    bar.update(1)
                    if self.progress and window.steps % BAR_EVERY == 0:
                        self.check_finite(window.mean_loss())
                        bar.set_postfix(loss=f"{window.mean_loss():.4f}", refresh=False)
                    if self.step - epoch * self.steps_per_epoch in self.eval_points or self.step == self.total_steps:
                        metrics = self.evaluate(window)
                        if on_evaluation is not None:
                            on_evaluation(metrics)
                        window = _Window()  # starts after the evaluation: throughput counts training only
                    if self.done:
                        break
        return TrainResult(
            history=self.history,
            steps=self.step,
            examples_per_s=self.seen / self.train_time if self.train_time else 0.0,
            stopped_early=self.stopped_early,
        )

    def _bar(self, epoch: int, offset: int) -> tqdm:
        return progress_bar(
            min(self.steps_per_epoch, self.total_steps - epoch * self.steps_per_epoch),
            f"epoch {epoch + 1}/{self.tc.epochs}",
            "batch",
            self.progress,
            initial=offset,
            dynamic_ncols=True,
        )


def _same_recipe(a: TrainConfig, b: TrainConfig) -> bool:
    ignore = {"num_threads", "device", "precision"}  # how the steps compute, not the recipe
    return a.model_dump(exclude=ignore) == b.model_dump(exclude=ignore)
