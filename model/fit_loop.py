"""The one training loop, for a plain run (model/loop.py's Trainer) and for a stack of K members
trained as one (caviar/tuning/members/fused_trial.py) alike, and the parts both keep per run or per member:
the evaluation plan, the train-loss window, patience, the compile and start-up clocks, and the
evaluation's record. A behaviour of train.* written here holds for a member as for a run.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from tqdm import tqdm

from model.batches import DeviceSplit, epoch_batches
from model.config import TrainConfig

MIN_IMPROVEMENT = 1e-4  # val_loss must drop by this much to reset the patience counter


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


class Window:
    """Train loss and throughput since the last evaluation, for every member trained (K = 1: a plain
    run). The loss adds up on the device: reading it is a host sync, done at evaluations and for the
    progress bar every BAR_EVERY steps only."""

    def __init__(self):
        self.loss, self.steps, self.examples, self.started = 0.0, 0, 0, time.perf_counter()
        self.elapsed: float | None = None  # set when the window closes, before its evaluation scores

    def add(self, loss: torch.Tensor, examples: int) -> None:
        """`loss`: the step's loss, one value or one per member ([K])."""
        self.loss, self.steps, self.examples = self.loss + loss, self.steps + 1, self.examples + examples

    def mean_loss(self, member: int | None = None) -> float:
        """The window's mean train loss (of one member's slot, for a stack)."""
        total = self.loss if member is None else self.loss[member]
        return float(total) / max(1, self.steps)

    def close(self) -> Window:
        self.elapsed = time.perf_counter() - self.started
        return self

    def seconds(self) -> float:
        """Training seconds in the window: up to its close, so scoring is never counted."""
        return self.elapsed if self.elapsed is not None else time.perf_counter() - self.started


class Patience:
    """train.patience's count for one run or one member: evaluations since val_loss last improved."""

    def __init__(self, best_val_loss: float = math.inf, bad_evals: int = 0):
        self.best_val_loss, self.bad_evals = best_val_loss, bad_evals

    def spent(self, val_loss: float, patience: int | None) -> bool:
        """Count this evaluation; True once `patience` evaluations in a row did not improve."""
        if val_loss < self.best_val_loss - MIN_IMPROVEMENT:
            self.best_val_loss, self.bad_evals = val_loss, 0
        else:
            self.bad_evals += 1
        return patience is not None and self.bad_evals >= patience


class StepClock:
    """Set-up until the first step (`startup_s`), and the seconds of steps that compiled a new batch
    shape (`compile_s`: a compiled module compiles on the first call of each shape)."""

    def __init__(self, compiles: bool, started: float | None = None):
        self.compiles, self.widths_seen, self.compile_s = compiles, set(), 0.0
        self.started, self.startup_s = started or time.perf_counter(), None

    def timed(self, width: int, step: Callable[[], torch.Tensor]) -> torch.Tensor:
        new_shape = self.compiles and width not in self.widths_seen
        began = time.perf_counter()
        loss = step()
        if new_shape:
            self.widths_seen.add(width)
            self.compile_s += time.perf_counter() - began
        if self.startup_s is None:  # data, tokenizer, network and first compile, until one step is done
            self.startup_s = time.perf_counter() - self.started
        return loss


class Trains(Protocol):
    """What the one training loop (fit_loop) drives: a plain run (Trainer, K = 1) or a stack of K
    members trained as one (caviar's fused group). Both evaluate at the same places of one plan."""

    tc: TrainConfig  # what every member shares: batch size, data order, epochs, evaluation places
    plan: EvaluationPlan
    step: int

    @property
    def done(self) -> bool: ...

    def train_one(self, width: int, rows: torch.Tensor) -> torch.Tensor: ...

    def evaluation(self, window: Window) -> None: ...


def fit_loop(
    trains: Trains,
    train_set: DeviceSplit,
    bar: Callable[[int, int], contextlib.AbstractContextManager] | None = None,
    watch: Callable[[Window, tqdm], None] | None = None,
) -> None:
    """The training loop, for one run and for a fused group alike: the epoch's batches in the plan's
    order from the current step (a resume starts mid-epoch), an evaluation at the plan's places and
    at the last step, until `done` (the end, patience, or every member stopped)."""
    plan, window = trains.plan, Window()
    while not trains.done:
        epoch, offset = divmod(trains.step, plan.steps_per_epoch)
        batches = epoch_batches(train_set.data, trains.tc.batch_size, trains.tc.seed, epoch)
        with bar(epoch, offset) if bar else contextlib.nullcontext() as shown:
            for width, rows in train_set.plan(batches[offset:]):
                window.add(trains.train_one(width, rows), len(rows))
                if watch is not None:
                    watch(window, shown)
                if trains.step - epoch * plan.steps_per_epoch in plan.eval_points or trains.step == plan.total_steps:
                    trains.evaluation(window.close())
                    window = Window()  # starts after the evaluation: throughput counts training only
                if trains.done:
                    break


def evaluation_row(trains: Trains, n: int, train_loss: float, val, lr: float, window: Window, clock: StepClock) -> dict:
    """One evaluation's record, the same for a run and for each member of a stack; `val`: its
    validation Metrics. `done_training` and `stopped_by_patience` are the caller's to add."""
    return {
        "evaluation": n,  # counts on across resumes: the checkpoint keeps the history
        "epoch": round(trains.step / trains.plan.steps_per_epoch, 4),
        "step": trains.step,
        "train_loss": train_loss,
        **{k: v for k, v in val.as_dict("val").items() if k != "val_confusion"},
        "lr": lr,
        "examples_per_s": window.examples / window.seconds(),  # each member sees every example
        "compile_s": clock.compile_s,
        "startup_s": clock.startup_s,
    }
