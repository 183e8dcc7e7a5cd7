"""The LR range test (lr-find, Leslie Smith's): raise the learning rate every step and watch loss and val accuracy.

The suggestion is read off smoothed curves (a centered rolling median, then mean, over log-lr), so a
single noisy batch cannot move it and, unlike an EMA, the smoothing does not lag to larger lrs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from model.batches import DeviceSplit, epoch_batches
from model.config import TrialConfig
from model.data import Splits
from model.evaluate import EVAL_BATCH, evaluate
from model.loop import train_step
from model.schedule import build_optimizer
from model.train import prepare

DIVERGED = 4.0  # stop once the smoothed loss exceeds 4x its best: the rest would only be noise
FALL_SHARE = 0.1  # base_lr: where the loss has made 10% of its way down to its minimum


@dataclass
class LrFindCurve:
    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    val_lrs: list[float] = field(default_factory=list)
    val_accuracies: list[float] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)
    diverged: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


def lr_ramp(min_lr: float, max_lr: float, steps: int, mode: str) -> np.ndarray:
    if mode == "linear":
        return np.linspace(min_lr, max_lr, steps)
    return min_lr * (max_lr / min_lr) ** (np.arange(steps) / max(1, steps - 1))


def smooth(values, window: int) -> np.ndarray:
    series = pd.Series(np.asarray(values, dtype=float))
    median = series.rolling(window, center=True, min_periods=1).median()
    return median.rolling(window, center=True, min_periods=1).mean().to_numpy()


def window_for(n: int) -> int:
    return max(3, n // 15) | 1  # odd, about 1/15 of the curve


def suggest(lrs, losses, val_lrs=None, val_accuracies=None) -> dict:
    """base_lr where the loss starts falling (or accuracy starts rising); max_lr just before the loss
    turns up (or accuracy falls). Both read off smoothed curves."""
    lrs, losses = np.asarray(lrs, dtype=float), np.asarray(losses, dtype=float)
    smoothed = smooth(losses, window_for(len(losses)))
    best = int(np.argmin(smoothed))
    start = float(np.median(smoothed[: max(3, len(smoothed) // 20)]))
    drop = start - smoothed[best]
    falling = np.flatnonzero(smoothed[: best + 1] <= start - FALL_SHARE * drop)
    base = float(lrs[falling[0]]) if drop > 0 and len(falling) else float(lrs[0])
    high = float(lrs[best])
    if val_lrs is not None and len(val_lrs) >= 5:
        accuracy = smooth(val_accuracies, window_for(len(val_accuracies) * 3) // 3 | 1)
        peak = int(np.argmax(accuracy))
        rise = accuracy[peak] - accuracy[0]
        rising = np.flatnonzero(accuracy[: peak + 1] >= accuracy[0] + FALL_SHARE * rise)
        if rise > 0 and len(rising):
            base = min(base, float(val_lrs[rising[0]]))
            high = min(high, float(val_lrs[peak]))
    if base >= high:  # a curve with no clear descent: Smith's rule of thumb, a decade below
        base = high / 10
    return {"base_lr": base, "max_lr": high, "min_loss_lr": float(lrs[best]), "smoothed_losses": smoothed.tolist()}


def run_lr_find(
    cfg: TrialConfig,
    *,
    min_lr: float,
    max_lr: float,
    steps: int | None,
    epochs: float | None,
    mode: str,
    eval_points: int,
    val_limit: int,
    splits: Splits | None = None,
    on_step=None,
) -> LrFindCurve:
    """Train from scratch with lr rising from min_lr to max_lr; stop early when the loss diverges."""
    run = prepare(cfg, splits)
    per_epoch = math.ceil(len(run.train_set) / cfg.train.batch_size)
    total = steps or max(10, round((epochs or 1) * per_epoch))
    ramp = lr_ramp(min_lr, max_lr, total, mode)
    val = _subset(run.val_set, val_limit)
    every = max(1, total // eval_points)
    optimizer = build_optimizer(run.net, cfg.train)
    test, best, step = LrFindCurve(), math.inf, 0
    ema = None
    while step < total:
        batches = epoch_batches(run.train_set.data, cfg.train.batch_size, cfg.train.seed, step // per_epoch)
        for width, rows in run.train_set.plan(batches[: total - step]):
            for group in optimizer.param_groups:
                group["lr"] = float(ramp[step])
            loss = float(train_step(run, width, rows, optimizer, cfg.train.grad_clip))  # each step's loss is the curve
            test.lrs.append(float(ramp[step]))
            test.losses.append(loss)
            step += 1
            ema = loss if ema is None else 0.9 * ema + 0.1 * loss
            best = min(best, ema)
            if step % every == 0 or step == total:
                metrics = evaluate(run.net, val, EVAL_BATCH)
                test.val_lrs.append(float(ramp[step - 1]))
                test.val_accuracies.append(metrics.accuracy)
                test.val_losses.append(metrics.loss)
            if on_step is not None:
                on_step(step, total, float(ramp[step - 1]), loss)
            if step > 10 and ema > DIVERGED * best:
                test.diverged = True
                return test
    return test


def _subset(split: DeviceSplit, limit: int) -> DeviceSplit:
    if len(split) <= limit:
        return split
    rows = np.random.default_rng(0).choice(len(split), size=limit, replace=False)
    return DeviceSplit(split.data.subset(rows), split.device)
