"""One configuration, no Ray: train, keep the best checkpoint by the job's metric, report on the test file.

To run: caviar train tune_jobs/quickstart.yaml --set train.epochs=1
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from caviar.experiment.intervals import CONFIDENCE, Interval, interval
from caviar.experiment.layout import TRAIN_CHECKPOINT, TRAIN_RESULT
from caviar.job.schema import JobSpec
from model.data import Splits
from model.device import pick_device
from model.evaluate import Metrics, evaluate_checkpoint
from model.files import write_atomically, write_json_atomically
from model.predictions import Predictions
from model.train import train


class KeepBest:
    """A `report` callback that keeps the checkpoint of the best evaluation so far by `metric`, and
    echoes each evaluation with its validation accuracy's 95% interval."""

    def __init__(self, folder: Path, metric: str, mode: str, echo: bool):
        self.folder, self.metric, self.sign, self.echo = folder, metric, 1 if mode == "max" else -1, echo
        self.best: dict | None = None
        self.best_interval: Interval | None = None  # the job's metric at the best evaluation

    def __call__(self, metrics: dict, checkpoint: Path) -> None:
        predictions = Predictions.load(checkpoint)
        accuracy = None if predictions is None else interval("val_accuracy", *_arrays(predictions))
        if self.echo:
            shown = "" if accuracy is None else " [{:.4f}, {:.4f}]".format(*accuracy.as_list())
            tqdm.write(
                f"  step {metrics['step']:>6}  epoch {metrics['epoch']:.2f}  train_loss {metrics['train_loss']:.4f}"
                f"  val_loss {metrics['val_loss']:.4f}  val_accuracy {metrics['val_accuracy']:.4f}{shown}"
                f"  lr {metrics['lr']:.2e}  {metrics['examples_per_s']:.0f} ex/s"
            )
        if self.best is None or self.sign * metrics[self.metric] > self.sign * self.best[self.metric]:
            self.best = metrics
            same = self.metric == "val_accuracy" or predictions is None
            self.best_interval = accuracy if same else interval(self.metric, *_arrays(predictions))
            write_atomically(self.folder, lambda tmp: shutil.copytree(checkpoint, tmp, dirs_exist_ok=True))


def _arrays(predictions: Predictions):
    return predictions.labels, predictions.positive


@dataclass
class SingleRun:
    """What `caviar train` made: the best evaluation (chosen on validation) and its test figures."""

    name: str
    metric: str
    best: dict  # the evaluation the job's metric chose
    test: Metrics  # that checkpoint on the test file: reported, never used to choose
    examples_per_s: float
    steps: int
    stopped_early: bool
    wall_s: float
    data_fingerprint: str
    checkpoint: str
    config: dict
    history: list[dict] = field(default_factory=list)
    best_interval: list[float] | None = None  # the job's metric at the best evaluation, 95%

    def as_json(self) -> dict:
        return {
            "name": self.name,
            "metric": self.metric,
            **{k: v for k, v in self.best.items() if k.startswith("val_")},
            "best_interval": self.best_interval,
            "confidence": CONFIDENCE,
            "best_step": self.best["step"],
            **self.test.as_dict("test"),
            "examples_per_s": self.examples_per_s,
            "steps": self.steps,
            "stopped_early": self.stopped_early,
            "wall_s": self.wall_s,
            "data_fingerprint": self.data_fingerprint,
            "checkpoint": self.checkpoint,
            "history": self.history,
            "config": self.config,
        }

    def describe(self) -> list[str]:
        t, best = self.test, self.best
        shown = "" if self.best_interval is None else " [{:.4f}, {:.4f}]".format(*self.best_interval)
        return [
            f"best {self.metric} {best[self.metric]:.4f}{shown} (step {best['step']}), test_accuracy {t.accuracy:.4f}, "
            f"test_f1 {t.f1:.4f}, {self.examples_per_s:.0f} examples/s, {self.wall_s:.0f}s",
            f"checkpoint: {self.checkpoint}",
        ]


def run_single(job: JobSpec, out_dir: Path, splits: Splits, progress: bool = True) -> SingleRun:
    started = time.perf_counter()
    cfg = job.trial_config()
    keeper = KeepBest(out_dir / TRAIN_CHECKPOINT, job.metric, job.mode, echo=progress)
    result = train(cfg, splits=splits, report=keeper, progress=progress)
    test = evaluate_checkpoint(keeper.folder, splits.test, pick_device(cfg.train.device))
    run = SingleRun(
        name=cfg.name,
        metric=job.metric,
        best=keeper.best,
        test=test,
        examples_per_s=result.examples_per_s,
        steps=result.steps,
        stopped_early=result.stopped_early,
        wall_s=time.perf_counter() - started,
        data_fingerprint=splits.fingerprint,
        checkpoint=str(keeper.folder),
        config=job.model_dump(mode="json"),
        history=result.history,
        best_interval=None if keeper.best_interval is None else keeper.best_interval.as_list(),
    )
    write_json_atomically(out_dir / TRAIN_RESULT, run.as_json())
    return run
