"""One run's trainer: its optimizer step, its evaluation and a state that saves and loads as one dict
(the checkpoint's trainer_state.pt). The loop itself is model/fit_loop.py's, which a fused group
of K members runs too.

Resume and the PBT hand-over are named methods; `fit` only runs the loop and asks `report` to keep
a checkpoint at each evaluation. Nothing here knows about Ray.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import PreTrainedTokenizerBase

from model.bars import progress_bar
from model.batches import DeviceSplit
from model.config import TrainConfig, TrialConfig
from model.data import Splits
from model.device import autocast
from model.errors import UserError
from model.evaluate import EVAL_BATCH, cross_entropy, scored
from model.fit_loop import Patience, StepClock, Window, evaluation_plan, evaluation_row, fit_loop
from model.predictions import Predictions
from model.schedule import build_optimizer, build_schedule

Report = Callable[[dict, Path | None], None]  # (metrics, checkpoint folder or None): the one link out


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


class Trainer:
    """Trains `run.net` with `cfg.train` through fit_loop, evaluating at fixed places in every epoch."""

    # the loop's own counters: with the optimizer, scheduler, patience and RNG, all a resume needs
    STATE_KEYS = ("step", "seen", "train_time", "history")

    def __init__(self, cfg: TrialConfig, run: Run, progress: bool = False, started: float | None = None):
        self.tc, self.run, self.progress = cfg.train, run, progress
        self.plan = plan = evaluation_plan(self.tc, len(run.train_set))
        self.steps_per_epoch, self.total_steps = plan.steps_per_epoch, plan.total_steps
        self.optimizer = build_optimizer(run.net, self.tc)
        self.scheduler = build_schedule(self.optimizer, self.tc, self.total_steps, self.steps_per_epoch)
        self.step, self.seen, self.train_time, self.patience = 0, 0, 0.0, Patience()
        self.history: list[dict] = []
        self.stopped_early = False
        self.clock = StepClock(run.step_net is not run.net, started)  # compile_s stays 0 when eager
        self.val_predictions: Predictions | None = None  # the last evaluation's, per review
        self._on_evaluation: Callable[[dict], None] | None = None

    # --- state -----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            **{key: getattr(self, key) for key in self.STATE_KEYS},
            "best_val_loss": self.patience.best_val_loss,
            "bad_evals": self.patience.bad_evals,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        for key in self.STATE_KEYS:
            setattr(self, key, state[key])
        self.patience = Patience(state["best_val_loss"], state["bad_evals"])
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

    # --- what fit_loop calls -----------------------------------------------------------------------
    def train_one(self, width: int, rows: torch.Tensor) -> torch.Tensor:
        tc = self.tc
        loss = self.clock.timed(
            width, lambda: train_step(self.run, width, rows, self.optimizer, tc.grad_clip, tc.label_smoothing)
        )
        self.scheduler.step()
        self.step += 1
        return loss

    def check_finite(self, loss: float) -> None:
        """Checked whenever the loss is read (evaluations, the progress bar): a diverged run stops
        before its next checkpoint, so no NaN weights can be saved or promoted."""
        if not math.isfinite(loss):
            raise NonFiniteLoss(
                f"train loss became {loss} by step {self.step} (lr {self.scheduler.get_last_lr()[0]:.3g}); "
                "no checkpoint was written from here on: lower train.lr or keep train.grad_clip on"
            )

    def evaluate(self, window: Window) -> dict:
        """Validation metrics plus the window's train loss; updates patience and the run's totals."""
        train_loss = window.mean_loss()
        self.check_finite(train_loss)
        self.seen, self.train_time = self.seen + window.examples, self.train_time + window.seconds()
        val, positive = scored(self.run.step_net, self.run.val_set, EVAL_BATCH)
        self.val_predictions = Predictions.of(self.run.val_set.data.labels, positive)  # kept with its checkpoint
        self.stopped_early = self.patience.spent(val.loss, self.tc.patience)
        row = evaluation_row(
            self, len(self.history) + 1, train_loss, val, self.scheduler.get_last_lr()[0], window, self.clock
        )
        metrics = {
            **row,
            # True on the run's own last evaluation; a run a scheduler stops never reports it
            "done_training": self.done,
            "stopped_by_patience": self.stopped_early,  # why a run ended before its last step
        }
        self.history.append(metrics)
        return metrics

    def evaluation(self, window: Window) -> None:
        metrics = self.evaluate(window)
        if self._on_evaluation is not None:
            self._on_evaluation(metrics)

    def fit(self, on_evaluation: Callable[[dict], None] | None = None) -> TrainResult:
        """Train to the end (or patience); `on_evaluation(metrics)` keeps each evaluation's checkpoint."""
        self._on_evaluation = on_evaluation
        fit_loop(self, self.run.train_set, self._bar if self.progress else None, self._watch)
        return TrainResult(
            history=self.history,
            steps=self.step,
            examples_per_s=self.seen / self.train_time if self.train_time else 0.0,
            stopped_early=self.stopped_early,
        )

    def _watch(self, window: Window, bar: tqdm | None) -> None:
        if bar is None:
            return
        bar.update(1)
        if window.steps % BAR_EVERY == 0:
            self.check_finite(window.mean_loss())
            bar.set_postfix(loss=f"{window.mean_loss():.4f}", refresh=False)

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
