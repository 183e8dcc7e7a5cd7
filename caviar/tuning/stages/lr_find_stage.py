"""`caviar lr-find`: the LR range test on a job's model and data, with suggested base_lr and max_lr.

To run: caviar lr-find tune_jobs/quickstart.yaml [--set lr_find.steps=500] [--json]

Writes lr_find.json and lr_find.png. A job with `train.lr: {from_lr_find: true}` runs this first
and then searches log-uniformly inside [base_lr, max_lr] (`caviar train` trains at max_lr).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from caviar.experiment import plots
from caviar.experiment.layout import LR_FIND_JSON, LR_FIND_PLOT
from caviar.job.schema import JobSpec
from model.bars import progress_bar
from model.data import Splits
from model.files import write_json_atomically
from model.lr_find import run_lr_find, suggest


@dataclass
class LrFindResult:
    base_lr: float
    max_lr: float
    min_loss_lr: float
    steps: int
    diverged: bool
    json: str  # lr_find.json: the whole curve
    plot: str  # lr_find.png

    def as_json(self) -> dict:
        return dict(self.__dict__)

    def describe(self) -> list[str]:
        return [
            f"base_lr {self.base_lr:.2e}  max_lr {self.max_lr:.2e}  ({self.steps} steps"
            f"{', stopped at divergence' if self.diverged else ''})",
            f"wrote {self.json} and {self.plot}",
        ]


def lr_find(job: JobSpec, out_dir: Path, splits: Splits, progress: bool = True) -> LrFindResult:
    spec = job.lr_find
    out_dir.mkdir(parents=True, exist_ok=True)
    bars = []  # opened at the first step, so the data-loading lines print above it, not inside it

    def on_step(step: int, total: int, lr: float, loss: float) -> None:
        if not bars:
            bars.append(progress_bar(total, "lr range test", "step", progress))
        bars[0].update(1)
        bars[0].set_postfix(lr=f"{lr:.2e}", loss=f"{loss:.3f}", refresh=False)

    curve = run_lr_find(
        job.trial_config(),
        min_lr=spec.min_lr,
        max_lr=spec.max_lr,
        steps=spec.steps,
        epochs=spec.epochs,
        mode=spec.mode,
        eval_points=spec.eval_points,
        val_limit=spec.val_limit,
        splits=splits,
        on_step=on_step,
    )
    for bar in bars:
        bar.close()
    found = {**curve.as_dict(), **suggest(curve.lrs, curve.losses, curve.val_lrs, curve.val_accuracies)}
    found.update({"mode": spec.mode, "steps": len(curve.lrs), "job": job.name})
    write_json_atomically(out_dir / LR_FIND_JSON, found)
    plots.lr_find(found, out_dir / LR_FIND_PLOT)
    return LrFindResult(
        base_lr=found["base_lr"],
        max_lr=found["max_lr"],
        min_loss_lr=found["min_loss_lr"],
        steps=found["steps"],
        diverged=found["diverged"],
        json=str(out_dir / LR_FIND_JSON),
        plot=str(out_dir / LR_FIND_PLOT),
    )
