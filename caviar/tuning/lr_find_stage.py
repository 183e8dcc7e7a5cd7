"""`caviar lr-find`: the LR range test on a job's model and data, with suggested base_lr and max_lr.

To run: caviar lr-find tune_jobs/quickstart.yaml [--set lr_find.steps=500] [--json]

Writes lr_find.json and lr_find.png. A job with `train.lr: {from_lr_find: true}` runs this first
and then searches log-uniformly inside [base_lr, max_lr].
"""

from __future__ import annotations

import sys
from pathlib import Path

from tqdm import tqdm

from caviar.experiment import plots
from caviar.job.schema import JobSpec
from model.data import Splits
from model.files import write_json_atomically
from model.lr_find import run_range_test, suggest


def lr_find(job: JobSpec, out_dir: Path, splits: Splits | None = None, progress: bool = True) -> dict:
    spec = job.lr_find
    out_dir.mkdir(parents=True, exist_ok=True)
    bars = []  # opened at the first step, so the data-loading lines print above it, not inside it

    def on_step(step: int, total: int, lr: float, loss: float) -> None:
        if not bars:
            bars.append(tqdm(total=total, desc="lr range test", unit="step", disable=not progress, file=sys.stderr))
        bars[0].update(1)
        bars[0].set_postfix(lr=f"{lr:.2e}", loss=f"{loss:.3f}", refresh=False)

    test = run_range_test(
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
    result = {**test.as_dict(), **suggest(test.lrs, test.losses, test.val_lrs, test.val_accuracies)}
    result.update({"mode": spec.mode, "steps": len(test.lrs), "job": job.name})
    write_json_atomically(out_dir / "lr_find.json", result)
    plots.lr_find(result, out_dir / "lr_find.png")
    return {**result, "json": str(out_dir / "lr_find.json"), "plot": str(out_dir / "lr_find.png")}
