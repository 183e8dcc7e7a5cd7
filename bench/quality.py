"""The quality target: the promoted from-scratch model on the full NSMC test file, after the best job.

To run: NSMC_DIR=/path/to/nsmc python -m bench.quality --job tune_jobs/nsmc_best.yaml
        NSMC_DIR=../shared/data/nsmc python bench/quality.py --experiment results/<done>   (skip tuning)

Target: >= 87.0% test accuracy without pretrained weights (published from-scratch NSMC results:
word-CNN 85.99, self-attentive 86.37, Word2Vec+BiLSTM 86.52, fastText 85.50), in <= 90 min on 2 CPUs.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import ray

from bench.common import write_result
from caviar.experiment import OUTCOME_FILE, load_job_of, load_trials
from caviar.jobfile import load_job
from caviar.pipeline import tune_job
from caviar.promote import promote
from model.data import TEST_FILE, locate_nsmc, read_reviews
from model.errors import UserError
from model.evaluate import evaluate_checkpoint
from model.predict import Predictor

TARGET = 0.87


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", type=Path, default=Path("tune_jobs/nsmc_best.yaml"))
    parser.add_argument("--experiment", type=Path, default=None, help="a finished experiment: skip tuning")
    parser.add_argument("--reseed", type=int, default=None, help="seed re-runs before promotion")
    args = parser.parse_args()

    started = time.perf_counter()
    if args.experiment is None:
        job = load_job(args.job)
        if job.model.pretrained:
            raise UserError(f"{args.job}: model.pretrained is set; the quality target is for from-scratch models")
        experiment = Path(tune_job(job)["experiment_dir"])
    else:
        experiment = args.experiment
    with tempfile.TemporaryDirectory() as registry:
        done = promote(experiment, "quality", force=True, root=Path(registry), reseed_seeds=args.reseed)
        ray.shutdown()
        job = load_job_of(experiment)
        folder = locate_nsmc(job.data)
        full_test = read_reviews(folder / TEST_FILE)  # the whole file, whatever the job's test_limit
        metrics = evaluate_checkpoint(Path(done["path"]), full_test)
    wall = time.perf_counter() - started
    if args.experiment is not None:  # tuned earlier: count that run's wall time too
        wall += json.loads((experiment / OUTCOME_FILE).read_text(encoding="utf-8"))["wall_s"]
    ensemble = ensemble_of_kept(experiment, job.metric, job.mode, full_test)
    write_result(
        "quality",
        {
            "experiment": str(experiment),
            "promoted": {k: done[k] for k in ("version", "val_accuracy", "reseed")},
            "test_examples": len(full_test),
            "test_accuracy": metrics.accuracy,
            "test_f1": metrics.f1,
            "wall_s": wall,  # tuning, promotion and the test pass
            "tuned_here": args.experiment is None,
            "ensemble_of_kept_trials": ensemble,
            "target": {"test_accuracy": f">= {TARGET}", "wall_s": "<= 5400"},
            "met": {"test_accuracy": metrics.accuracy >= TARGET, "wall_s": wall <= 5400},
        },
    )


def ensemble_of_kept(experiment: Path, metric: str, mode: str, reviews) -> dict:
    """Mean P(긍정) over the best checkpoints the job kept (its best K trials). Not the promoted
    model, and outside the timed run: a pointer to how far averaging alone would move the figure."""
    folders = [c for t in load_trials(experiment) if (c := t.best_checkpoint(metric, mode))]
    texts = reviews.document.tolist()
    probs = np.mean([Predictor.from_checkpoint(f).probabilities(texts) for f in folders], axis=0)
    return {"members": len(folders), "test_accuracy": float(((probs >= 0.5) == reviews.label.to_numpy()).mean())}


if __name__ == "__main__":
    main()
