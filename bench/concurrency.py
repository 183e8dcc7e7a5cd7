"""Parallel trials pay: 8 short trials at 1 CPU each, 2 at a time against 1 at a time.

To run: NSMC_DIR=/path/to/nsmc python -m bench.concurrency
        python -m bench.concurrency --smoke   (the test fixture, seconds: checks the script runs)

Target: throughput (trials per hour) of 2-at-a-time over 1-at-a-time >= 1.7 on 2 CPUs.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import ray

from bench.common import BenchParser, bench_job, smoke_sections, timed_ray_start, write_result
from caviar.tuning.pipeline import tune_job


def main() -> None:
    parser = BenchParser(__doc__)
    parser.add_argument("--subset", type=int, default=6000, help="train-file reviews per trial")
    parser.add_argument("--trials", type=int, default=8)
    args = parser.parse_args()
    if args.smoke:
        args.trials = 2

    ray_start_s = timed_ray_start()
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for concurrent in (1, 2):
            sections = {
                "name": f"concurrency-{concurrent}",
                "data": {"limit": args.subset},
                "train": {"epochs": 1, "eval_every": 1.0},
                "search_space": {"train.lr": {"loguniform": [3e-4, 3e-3]}},
                "scheduler": {"type": "fifo"},
                "num_samples": args.trials,
                "max_concurrent_trials": concurrent,
                "resources_per_trial": {"cpu": 1},
            }
            job = bench_job(smoke_sections(sections, args.smoke), Path(tmp) / "results")
            summary = tune_job(job, experiment=f"c{concurrent}").as_json()
            assert all(t["status"] in ("finished", "stopped") for t in summary["trials"]), summary["trials"]
            runs[concurrent] = {"wall_s": summary["wall_s"], "trials_per_hour": args.trials * 3600 / summary["wall_s"]}
    ray.shutdown()
    ratio = runs[2]["trials_per_hour"] / runs[1]["trials_per_hour"]
    write_result(
        "concurrency",
        {
            "trials": args.trials,
            "subset": args.subset,
            "one_at_a_time": runs[1],
            "two_at_a_time": runs[2],
            "throughput_ratio": ratio,
            "ray_start_s": ray_start_s,
            "target": {"throughput_ratio": ">= 1.7"},
            "met": {"throughput_ratio": ratio >= 1.7},
        },
        args.smoke,
    )


if __name__ == "__main__":
    main()
