"""Ray Tune's overhead: one trial under `caviar tune` against the same configuration under `caviar train`.

To run: NSMC_DIR=../shared/data/nsmc python bench/overhead.py

Target: examples/s under Ray / examples/s without Ray >= 0.95 (both count training steps only).
Also reports Ray's start-up seconds.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import bench_job, timed_ray_start, write_result  # noqa: E402
from caviar.experiment import load_trials  # noqa: E402
from caviar.single import run_single  # noqa: E402
from caviar.tuner import tune_job  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subset", type=int, default=30000, help="train-file reviews (stratified)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        sections = {
            "name": "overhead",
            "data": {"limit": args.subset, "test_limit": 2000},
            "train": {"epochs": 1, "eval_every": 0.5, "num_threads": 2},
            "num_samples": 1,
            "resources_per_trial": {"cpu": 2},
            "scheduler": {"type": "fifo"},
        }
        job = bench_job(sections, Path(tmp) / "results")
        plain = run_single(job, Path(tmp) / "single", progress=False)
        ray_start_s = timed_ray_start()
        summary = tune_job(job, experiment="overhead")
        (trial,) = load_trials(Path(summary["experiment_dir"]))
        history = trial.history
        # the same aggregate as `caviar train`: examples over training seconds, across all evaluations
        rows = history[["examples_per_s", "step"]].to_dict("records")
        batch = job.train.batch_size
        steps = [r["step"] - (rows[i - 1]["step"] if i else 0) for i, r in enumerate(rows)]
        seconds = sum(s * batch / r["examples_per_s"] for s, r in zip(steps, rows, strict=True))
        under_ray = sum(steps) * batch / seconds

    ratio = under_ray / plain["examples_per_s"]
    write_result(
        "overhead",
        {
            "subset": args.subset,
            "caviar_train_examples_per_s": plain["examples_per_s"],
            "ray_tune_examples_per_s": under_ray,
            "ratio": ratio,
            "ray_start_s": ray_start_s,
            "ray_tune_wall_s": summary["wall_s"],
            "caviar_train_wall_s": plain["wall_s"],
            "target": {"ratio": ">= 0.95"},
            "met": {"ratio": ratio >= 0.95},
        },
    )


if __name__ == "__main__":
    main()
