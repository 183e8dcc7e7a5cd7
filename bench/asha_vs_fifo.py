"""ASHA against FIFO on the same 16 sampled configurations (same seed), same concurrency, 2 CPUs.

To run: NSMC_DIR=/path/to/nsmc python -m bench.asha_vs_fifo --subset 30000
        python -m bench.asha_vs_fifo --smoke   (the test fixture, seconds: checks the script runs)

Target: ASHA's wall time <= 1/3 of FIFO's, with best val accuracy within 0.5 points.
Each trial trains the default from-scratch model for one epoch, evaluated every 1/8 epoch
(max_t = 8 evaluations); ASHA stops trials at rungs 1 and 4 (reduction factor 4).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import ray

from bench.common import BenchParser, bench_job, smoke_sections, timed_ray_start, write_result
from caviar.tuning.pipeline import tune_job

SPACE = {
    "train.lr": {"loguniform": [1e-4, 5e-3]},
    "train.weight_decay": {"loguniform": [1e-4, 0.1]},
    "train.warmup_ratio": {"uniform": [0.0, 0.2]},
    "train.schedule": {"choice": ["linear", "cosine", "constant"]},
    "model.dropout": {"choice": [0.0, 0.1, 0.2]},
}
SCHEDULERS = {
    "fifo": {"type": "fifo"},
    "asha": {"type": "asha", "max_t": 8, "grace_period": 1, "reduction_factor": 4},
}


def main() -> None:
    parser = BenchParser(__doc__)
    parser.add_argument("--subset", type=int, default=30000, help="train-file reviews (stratified)")
    parser.add_argument("--samples", type=int, default=16)
    args = parser.parse_args()
    if args.smoke:
        args.samples = 2
    ray_start_s = timed_ray_start()
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, scheduler in SCHEDULERS.items():
            sections = {
                "name": f"bench-{name}",
                "data": {"limit": args.subset},
                "train": {"epochs": 1, "eval_every": 0.125},
                "search_space": SPACE,
                "scheduler": scheduler,
                "num_samples": args.samples,
                "max_concurrent_trials": 2,
                "resources_per_trial": {"cpu": 1},
                "seed": 0,  # the same 16 configurations under both schedulers
            }
            job = bench_job(smoke_sections(sections, args.smoke), Path(tmp) / "results")
            summary = tune_job(job, experiment=name).as_json()
            runs[name] = {
                "wall_s": summary["wall_s"],
                "best_val_accuracy": summary["best_val_accuracy"],
                "best_config": summary["best_config"],
                "evaluations": sum(t["evaluations"] for t in summary["trials"]),
                "stopped_early": summary["stopped_early"],
                "configs": sorted(str(sorted(t["params"].items())) for t in summary["trials"]),
            }
    ray.shutdown()
    same_configs = runs["fifo"].pop("configs") == runs["asha"].pop("configs")
    time_ratio = runs["asha"]["wall_s"] / runs["fifo"]["wall_s"]
    gap_points = 100 * (runs["fifo"]["best_val_accuracy"] - runs["asha"]["best_val_accuracy"])
    write_result(
        "asha_vs_fifo",
        {
            "subset": args.subset,
            "samples": args.samples,
            "same_configurations": same_configs,
            **runs,
            "asha_over_fifo_wall": time_ratio,
            "best_val_accuracy_gap_points": gap_points,
            "ray_start_s": ray_start_s,
            "target": {"asha_over_fifo_wall": "<= 0.333", "best_val_accuracy_gap_points": "<= 0.5"},
            "met": {"asha_over_fifo_wall": time_ratio <= 1 / 3, "best_val_accuracy_gap_points": gap_points <= 0.5},
        },
        args.smoke,
    )


if __name__ == "__main__":
    main()
