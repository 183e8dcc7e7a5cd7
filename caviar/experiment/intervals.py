"""How sure a validation figure is: a 95% interval on each trial's metric, and on the paired
difference between two checkpoints scored on the same examples.

Validation has a few thousand reviews, so one standard error of an accuracy near 88% is about 0.4
points on 7,500, as large as the gaps a search decides on. Both intervals come from one percentile
bootstrap over the examples, with a fixed seed so a report reads the same twice; the paired one
resamples the same examples for both models, which is what makes it narrow where they agree. For
accuracy, the exact McNemar test's p-value on the discordant pairs is given beside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
DRAWS = 2000  # bootstrap resamples
CHUNK = 200  # resamples drawn at once (memory: CHUNK x n indices)
SEED = 0


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float

    def as_list(self) -> list[float]:
        return [self.low, self.high]

    def __str__(self) -> str:
        return f"{self.value:.4f} [{self.low:.4f}, {self.high:.4f}]"


@dataclass(frozen=True)
class Difference(Interval):
    """b minus a, on the same n examples; `tied` when the interval holds 0."""

    n: int
    mcnemar_p: float | None  # accuracy only: exact two-sided test on the pairs the two disagree on

    @property
    def tied(self) -> bool:
        return self.low <= 0.0 <= self.high


def metric_on(metric: str, labels: np.ndarray, positive: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """The metric (val_accuracy, val_loss, val_f1) on resamples: rows is [draws, n] indices, or None
    for the examples as they are (one value)."""
    rows = np.arange(len(labels))[None, :] if rows is None else rows
    y, p = labels[rows], positive[rows]
    name = metric.removeprefix("val_").removeprefix("test_").removeprefix("gate_")
    if name == "accuracy":
        return ((p >= 0.5) == (y == 1)).mean(axis=1)
    if name == "loss":
        p_true = np.clip(np.where(y == 1, p, 1.0 - p), 1e-12, 1.0)
        return -np.log(p_true).mean(axis=1)
    if name == "f1":
        predicted = p >= 0.5
        tp = (predicted & (y == 1)).sum(axis=1)
        wrong = (predicted != (y == 1)).sum(axis=1)
        return np.where(tp > 0, 2 * tp / np.maximum(2 * tp + wrong, 1), 0.0)
    raise ValueError(f"no interval for metric {metric!r}")


def _resamples(n: int):
    rng = np.random.default_rng(SEED)
    for start in range(0, DRAWS, CHUNK):
        yield rng.integers(0, n, size=(min(CHUNK, DRAWS - start), n), dtype=np.int32)


def _percentiles(values: np.ndarray) -> tuple[float, float]:
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def interval(metric: str, labels: np.ndarray, positive: np.ndarray) -> Interval:
    value = float(metric_on(metric, labels, positive)[0])
    draws = np.concatenate([metric_on(metric, labels, positive, rows) for rows in _resamples(len(labels))])
    return Interval(value, *_percentiles(draws))


def paired_difference(metric: str, labels: np.ndarray, a: np.ndarray, b: np.ndarray) -> Difference:
    """metric(b) - metric(a) with its paired 95% interval; a and b are positive probabilities for the
    same examples, in the same order."""
    if len(a) != len(b) or len(a) != len(labels):
        raise ValueError(f"paired predictions must cover the same examples ({len(a)} and {len(b)})")
    value = float(metric_on(metric, labels, b)[0] - metric_on(metric, labels, a)[0])
    draws = np.concatenate(
        [metric_on(metric, labels, b, rows) - metric_on(metric, labels, a, rows) for rows in _resamples(len(labels))]
    )
    p = mcnemar_p((a >= 0.5) == (labels == 1), (b >= 0.5) == (labels == 1)) if metric.endswith("accuracy") else None
    return Difference(value, *_percentiles(draws), n=len(labels), mcnemar_p=p)


def mcnemar_p(a_right: np.ndarray, b_right: np.ndarray) -> float:
    """Exact two-sided McNemar test: of the examples exactly one model gets right, is the split even?"""
    only_a, only_b = int((a_right & ~b_right).sum()), int((b_right & ~a_right).sum())
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def seeded_difference(metric: str, labels: np.ndarray, a: np.ndarray, b: np.ndarray) -> Difference:
    """Mean over seeds of metric(b_s) - metric(a_s), where a and b are [seeds, n] positive
    probabilities and row s of each was trained with the same seed. The interval resamples both
    levels, the seeds (paired) and the examples, so it holds the seed-to-seed spread as well as the
    examples' noise; with 2 or 3 seeds it is wide, as it should be."""
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    if a.shape != b.shape or a.shape[1] != len(labels):
        raise ValueError(f"seeded predictions must have the same shape ({a.shape} and {b.shape})")
    seeds = a.shape[0]
    value = float(
        np.mean([metric_on(metric, labels, b[s])[0] - metric_on(metric, labels, a[s])[0] for s in range(seeds)])
    )
    rng, draws = np.random.default_rng(SEED + 1), []
    for rows in _resamples(len(labels)):
        per_seed = np.stack(
            [metric_on(metric, labels, b[s], rows) - metric_on(metric, labels, a[s], rows) for s in range(seeds)]
        )
        picked = rng.integers(0, seeds, size=(seeds, rows.shape[0]))  # [seeds, draws]: the seeds resampled
        draws.append(np.take_along_axis(per_seed, picked, axis=0).mean(axis=0))
    return Difference(value, *_percentiles(np.concatenate(draws)), n=len(labels) * seeds, mcnemar_p=None)
