"""Object storage against a local disk: the quickstart job on an S3-compatible store and on a local folder, in one run.

To run: python -m bench.storage            (the quickstart job; NSMC through NSMC_DIR or the cache)
        python -m bench.storage --smoke    (seconds, on the fixture reviews: what the test suite runs)

The store is moto's server on loopback (caviar/ops/local_store.py), started and stopped here. One
Ray serves both runs. Figures: the wall-time ratio of the run on the store to the run on disk
(target <= 1.15); the bytes of checkpoints left on the store after pruning against the bound a local
disk keeps (target <= 1.0); and the seconds `report` and `promote` take from the store with an
empty cache (the mirror fetches everything but the weights, promote its candidate's alone).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import ray

from bench.common import PROJECT, BenchParser, run_main, timed_ray_start, write_result
from caviar.cli.results import experiment_folder
from caviar.experiment.object_store import mirror_of
from caviar.experiment.report import write_report
from caviar.job.loading import load_job
from caviar.ops.local_store import BUCKET, object_sizes, object_store
from caviar.registry.promote import promote
from caviar.tuning.pipeline import tune_job

SMOKE = [
    f"data.dir={PROJECT / 'tests' / 'fixtures' / 'nsmc'}",
    "data.val_fraction=0.2",
    "data.limit=null",
    "data.test_limit=null",
    "model={vocab_size: 300, layers: 1, hidden: 64, heads: 2, intermediate: 128, max_len: 32}",
    "train.batch_size=8",
    "train.epochs=1",
    "num_samples=2",
]


def main() -> None:
    parser = BenchParser(__doc__)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as tmp, object_store(Path(tmp) / "moto.log") as env:
        os.environ.update(env)
        figures = measure(Path(tmp), env, SMOKE if args.smoke else [])
    write_result("storage", {"smoke": args.smoke, **figures}, args.smoke)


def measure(tmp: Path, env: dict, overrides: list[str]) -> dict:

    ray_start_s = timed_ray_start()
    runs = {}
    for where, storage in (("disk", str(tmp / "results")), ("store", f"s3://{BUCKET}/bench")):
        job = load_job(PROJECT / "tune_jobs" / "quickstart.yaml", [*overrides, f"storage={storage}"])
        runs[where] = tune_job(job, experiment=f"quickstart-{where}")
    ray.shutdown()
    outcome = runs["store"]
    on_store = sum(size for key, size in object_sizes(env, "bench/quickstart-store/").items() if "/checkpoint_" in key)
    report_s, promote_s = read_back(tmp, outcome.experiment_dir)
    ratio = outcome.wall_s / runs["disk"].wall_s
    bound_ratio = on_store / outcome.checkpoint_bytes_bound
    return {
        "job": "tune_jobs/quickstart.yaml",
        "trials": len(outcome.trials),
        "ray_start_s": ray_start_s,
        "wall_s": {where: run.wall_s for where, run in runs.items()},
        "store_over_disk_wall": ratio,
        "checkpoint_bytes_on_store": on_store,
        "checkpoint_bytes_bound": outcome.checkpoint_bytes_bound,
        "store_bytes_over_bound": bound_ratio,
        "best_val_accuracy": {where: run.best_val_accuracy for where, run in runs.items()},
        "report_s_empty_cache": report_s,
        "promote_s_empty_cache": promote_s,
        "target": {"store_over_disk_wall": "<= 1.15", "store_bytes_over_bound": "<= 1.0"},
        "met": {"store_over_disk_wall": ratio <= 1.15, "store_bytes_over_bound": bound_ratio <= 1.0},
    }


def read_back(tmp: Path, uri: str) -> tuple[float, float]:
    """Seconds for report, then promote, from the store through a fresh cache, as the commands run them."""
    os.environ["CAVIAR_CACHE"] = str(tmp / "empty-cache")
    started = time.perf_counter()
    folder = experiment_folder(uri)
    mirror_of(folder).push(*write_report(folder).record.files)
    report_s = time.perf_counter() - started
    started = time.perf_counter()
    promote(experiment_folder(uri), "bench-storage", root=tmp / "registry")
    return report_s, time.perf_counter() - started


if __name__ == "__main__":
    run_main(main, "bench.storage")
