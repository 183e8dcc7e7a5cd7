"""One configuration, no Ray: train, keep the best checkpoint by val accuracy, report on the test file.

To run: caviar train tune_jobs/quickstart.yaml --set train.epochs=1
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from tqdm import tqdm

from model.data import load_splits
from model.device import pick_device
from model.evaluate import evaluate_checkpoint
from model.files import write_atomically, write_json_atomically
from model.train import train

METRIC = "val_accuracy"
RESULT = "result.json"  # the run's summary; its presence is what `caviar promote` knows a train run by


class KeepBest:
    """A `report` callback that keeps the checkpoint of the best evaluation so far, and echoes metrics."""

    def __init__(self, folder: Path, echo: bool):
        self.folder, self.echo, self.best = folder, echo, None

    def __call__(self, metrics: dict, checkpoint: Path) -> None:
        if self.echo:
            tqdm.write(
                f"  step {metrics['step']:>6}  epoch {metrics['epoch']:.2f}  train_loss {metrics['train_loss']:.4f}"
                f"  val_loss {metrics['val_loss']:.4f}  val_accuracy {metrics['val_accuracy']:.4f}"
                f"  lr {metrics['lr']:.2e}  {metrics['examples_per_s']:.0f} ex/s"
            )
        if self.best is None or metrics[METRIC] > self.best[METRIC]:
            self.best = metrics
            write_atomically(self.folder, lambda tmp: _copy_into(checkpoint, tmp))


def _copy_into(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, dirs_exist_ok=True)


def run_single(job, out_dir: Path, progress: bool = True) -> dict:
    started = time.perf_counter()
    cfg = job.trial_config()
    splits = load_splits(cfg.data)
    keeper = KeepBest(out_dir / "checkpoint", echo=progress)
    result = train(cfg, splits=splits, report=keeper, progress=progress)
    test = evaluate_checkpoint(keeper.folder, splits.test, pick_device(cfg.train.device))
    summary = {
        "name": cfg.name,
        **{k: v for k, v in keeper.best.items() if k.startswith("val_")},
        "best_step": keeper.best["step"],
        **test.as_dict("test"),
        "examples_per_s": result.examples_per_s,
        "steps": result.steps,
        "stopped_early": result.stopped_early,
        "wall_s": time.perf_counter() - started,
        "data_fingerprint": splits.fingerprint,
        "checkpoint": str(keeper.folder),
        "history": result.history,
        "config": cfg.model_dump(mode="json"),
    }
    write_json_atomically(out_dir / RESULT, summary)
    return summary
