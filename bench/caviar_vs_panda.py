"""Caviar against panda under the same wall-clock budget on 2 CPUs: best test accuracy each finds.

To run: NSMC_DIR=/path/to/nsmc python -m bench.caviar_vs_panda --budget 1800
        python -m bench.caviar_vs_panda --smoke   (the test fixture, seconds: checks the script runs)

- panda: ONE model on both CPUs, its learning rate from the LR range test (the geometric middle of
  [base_lr, max_lr]), patience early stopping, trained until the budget ends.
- caviar: ASHA over many configurations at 1 CPU each, 2 at a time, inside the same budget
  (the range test's time is charged to panda, which needs it; caviar searches lr itself).
Validation picks each side's model; the test file only reports it.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import ray

from bench.common import BenchParser, bench_job, smoke_sections, timed_ray_start, write_result
from caviar.tuning.pipeline import tune_job
from caviar.tuning.stages.lr_find_stage import lr_find
from model.data import load_splits
from model.evaluate import evaluate_checkpoint

CAVIAR_SPACE = {
    "train.lr": {"loguniform": [1e-4, 5e-3]},
    "train.weight_decay": {"loguniform": [1e-4, 0.1]},
    "train.schedule": {"choice": ["linear", "cosine", "cyclical"]},
    "model.layers": {"randint": [1, 3]},
    "model.dropout": {"choice": [0.0, 0.1, 0.2]},
}


def main() -> None:
    parser = BenchParser(__doc__)
    parser.add_argument("--budget", type=float, default=1800, help="wall seconds for each side")
    parser.add_argument("--subset", type=int, default=None, help="train-file reviews (default: all)")
    parser.add_argument(
        "--epochs", type=int, default=8, help="most epochs a model may train; high, so the budget is what ends a run"
    )
    parser.add_argument("--samples", type=int, default=24, help="caviar's configurations")
    args = parser.parse_args()
    if args.smoke:
        args.budget, args.epochs, args.samples = 60.0, 1, 2
    data = {"limit": args.subset}
    train = {"epochs": args.epochs, "eval_every": 0.25}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        storage = Path(tmp) / "results"
        started = time.perf_counter()
        probe = {"name": "panda-lr", "data": data, "train": {**train, "num_threads": 2}}
        if args.smoke:
            probe["lr_find"] = {"steps": 10, "eval_points": 2}
        probe = bench_job(smoke_sections(probe, args.smoke), storage)
        found = lr_find(probe, Path(tmp) / "lr_find", load_splits(probe.data), progress=False)
        panda_lr = math.sqrt(found.base_lr * found.max_lr)
        lr_seconds = time.perf_counter() - started
        timed_ray_start()
        panda = bench_job(
            smoke_sections({
                "name": "panda",
                "data": data,
                "train": {**train, "lr": panda_lr, "patience": 4},
                "scheduler": {"type": "fifo"},
                "num_samples": 1,
                "resources_per_trial": {"cpu": 2},
                "time_budget_s": max(60.0, args.budget - lr_seconds),
            }, args.smoke),
            storage,
        )  # fmt: skip
        caviar = bench_job(
            smoke_sections({
                "name": "caviar",
                "data": data,
                "train": train,
                "search_space": CAVIAR_SPACE,
                "scheduler": {"type": "asha", "max_t": 4 * args.epochs, "grace_period": 1, "reduction_factor": 3},
                "num_samples": args.samples,
                "max_concurrent_trials": 2,
                "resources_per_trial": {"cpu": 1},
                "time_budget_s": args.budget,
            }, args.smoke),
            storage,
        )  # fmt: skip
        test = load_splits(panda.data).test
        for side, job in (("panda", panda), ("caviar", caviar)):
            summary = tune_job(job, experiment=side).as_json()
            metrics = evaluate_checkpoint(Path(summary["best_checkpoint"]), test)
            results[side] = {
                "wall_s": summary["wall_s"] + (lr_seconds if side == "panda" else 0.0),
                "trials": len(summary["trials"]),
                "best_val_accuracy": summary["best_val_accuracy"],
                "test_accuracy": metrics.accuracy,
                "best_config": summary["best_config"],
            }
        results["panda"]["lr_from_lr_find"] = {"base_lr": found.base_lr, "max_lr": found.max_lr, "lr": panda_lr}
        ray.shutdown()
    write_result(
        "caviar_vs_panda",
        {
            "budget_s": args.budget,
            "subset": args.subset,
            **results,
            "caviar_minus_panda_test_points": 100
            * (results["caviar"]["test_accuracy"] - results["panda"]["test_accuracy"]),
        },
        args.smoke,
    )


if __name__ == "__main__":
    main()
