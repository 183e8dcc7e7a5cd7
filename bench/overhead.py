"""Ray Tune's overhead: one trial under `caviar tune` against the same configuration under `caviar train`.

To run: NSMC_DIR=/path/to/nsmc python -m bench.overhead            (one epoch of full NSMC)
        NSMC_DIR=../shared/data/nsmc python -m bench.overhead --subset 30000
        python -m bench.overhead --smoke   (the test fixture, seconds: checks the script runs)

Target: examples/s under Ray / examples/s without Ray >= 0.95 (both count training steps only).
Also reports Ray's start-up seconds, and the ratio after the first evaluation: Ray's own
processes start up while the first trial begins, which costs a short run more than a long one.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import ray

from bench.common import BenchParser, bench_job, smoke_sections, timed_ray_start, write_result
from caviar.experiment.record import load_trials
from caviar.tuning.pipeline import tune_job
from caviar.tuning.stages.single_run import run_single
from model.data import load_splits


def aggregate(rows: list[dict], batch: int, skip: int = 0) -> float:
    """Examples over training seconds across evaluation windows (each row covers the steps since the
    one before), leaving out the first `skip` windows."""
    steps = [r["step"] - (rows[i - 1]["step"] if i else 0) for i, r in enumerate(rows)]
    pairs = list(zip(steps, rows, strict=True))[skip:]
    seconds = sum(n * batch / r["examples_per_s"] for n, r in pairs)
    return sum(n for n, _ in pairs) * batch / seconds


def main() -> None:
    parser = BenchParser(__doc__)
    parser.add_argument("--subset", type=int, default=None, help="train-file reviews (default: all)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        sections = {
            "name": "overhead",
            "data": {"limit": args.subset, "test_limit": 2000},
            "train": {"epochs": 1, "eval_every": 0.25, "num_threads": 2},
            "num_samples": 1,
            "resources_per_trial": {"cpu": 2},
            "scheduler": {"type": "fifo"},
        }
        job = bench_job(smoke_sections(sections, args.smoke), Path(tmp) / "results")
        plain = run_single(job, Path(tmp) / "single", load_splits(job.data), progress=False).as_json()
        ray_start_s = timed_ray_start()
        summary = tune_job(job, experiment="overhead").as_json()
        (trial,) = load_trials(Path(summary["experiment_dir"]))
        history = trial.history
        # the same aggregate as `caviar train`: examples over training seconds, across all evaluations
        batch = job.train.batch_size
        under_ray = aggregate(history.to_dict("records"), batch)
        under_ray_steady = aggregate(history.to_dict("records"), batch, skip=1)
        plain_steady = aggregate(plain["history"], batch, skip=1)
        ray.shutdown()

    ratio = under_ray / plain["examples_per_s"]
    write_result(
        "overhead",
        {
            "subset": args.subset,
            "caviar_train_examples_per_s": plain["examples_per_s"],
            "ray_tune_examples_per_s": under_ray,
            "ratio": ratio,
            "ratio_after_first_evaluation": under_ray_steady / plain_steady,
            "ray_start_s": ray_start_s,
            "ray_tune_wall_s": summary["wall_s"],
            "caviar_train_wall_s": plain["wall_s"],
            "target": {"ratio": ">= 0.95"},
            "met": {"ratio": ratio >= 0.95},
        },
        args.smoke,
    )


if __name__ == "__main__":
    main()
