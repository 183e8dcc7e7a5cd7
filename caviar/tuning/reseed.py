"""Seed re-runs before promotion: the top-K configurations, trained to full length with S new seeds.

To run: caviar reseed results/<experiment> --seeds 3 [--top-k 3]   (or final: {seeds: 3} in the job)

One lucky seed can win a search; the mean over seeds is what the configuration is worth. The
configuration with the best mean of the job's VALIDATION metric is chosen (test only reports), and
its best seed's checkpoint is what `caviar promote` then takes. Runs go to
<experiment>/reseed/config-<rank>/, in parallel on Ray.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict

from caviar.experiment.layout import RESEED_FILE, Storage, reseed_dir
from caviar.experiment.record import Experiment
from caviar.job.keys import set_dotted
from caviar.job.schema import JobSpec
from caviar.tuning.tuner import build_tuner
from model.data import Splits
from model.errors import UserError
from model.evaluate import evaluate_checkpoint
from model.files import write_json_atomically


def seed_job(job: JobSpec, params: dict, seeds: list[int], rank: int) -> JobSpec:
    """The job with one configuration's values fixed, searching only over the seed, to full length."""
    raw = job.model_dump(mode="json")
    for key, value in params.items():
        set_dotted(raw, key, value)
    raw.update(
        name=f"{job.name}-reseed-{rank}",
        search_space={"train.seed": {"grid": seeds}},
        search="grid",
        scheduler={"type": "fifo"},
        num_samples=1,
        rounds=1,
        checkpoint={"num_to_keep": 1, "keep_best_trials": None},
    )
    return JobSpec.model_validate(raw)


def reseed(experiment: Experiment, seeds: int, top_k: int, splits: Splits) -> dict:
    """Re-train the experiment's top-K configurations with `seeds` new seeds each (Ray is running);
    choose on the job's metric (validation), report the test file's verdict, and record it all in
    reseed/reseed.json, which `caviar promote` reads."""
    job = experiment.job
    top = [trial for trial, _ in experiment.ranked()[:top_k]]
    if not top:
        raise UserError(f"{experiment.folder}: no trial reported {job.metric}; nothing to re-run")
    folder = reseed_dir(experiment.folder)
    folder.mkdir(exist_ok=True)
    configs = []
    for rank, trial in enumerate(top, start=1):
        seed_list = [job.train.seed + 1000 * i for i in range(1, seeds + 1)]
        seeded = seed_job(job, trial.params, seed_list, rank)
        build_tuner(seeded, f"config-{rank}", Storage(str(folder)), splits).fit()
        runs = _seed_runs(Experiment.load(folder / f"config-{rank}", job), rank, splits.test)
        configs.append(
            {"rank": rank, "source_trial": trial.trial_id, "params": trial.params, "runs": runs, **spread(runs)}
        )
    sign = 1 if job.mode == "max" else -1  # the job's metric may be a loss
    chosen = max(configs, key=lambda c: sign * c["val_mean"])
    best_run = max(chosen["runs"], key=lambda r: sign * r["val"])
    outcome = {
        "seeds": seeds,
        "top_k": len(configs),
        "metric": job.metric,
        "configs": configs,
        "chosen_rank": chosen["rank"],
        "best_run": best_run,
    }
    write_json_atomically(folder / RESEED_FILE, outcome)
    return outcome


def _seed_runs(runs: Experiment, rank: int, test) -> list[dict]:
    """Each seed's best evaluation by the job's metric (its checkpoint scored on the test file)."""
    rows = []
    for run in runs.trials():
        row = run.best_row(runs.job.metric, runs.job.mode)
        checkpoint = runs.best_checkpoint(run)
        if row is None or checkpoint is None:
            raise UserError(f"re-run {run.trial_id} of configuration {rank} failed: {run.error or 'no report'}")
        metrics = evaluate_checkpoint(checkpoint, test)
        rows.append(
            {
                "seed": run.params["train.seed"],
                "val": float(row[runs.job.metric]),  # the job's metric: what chooses
                "val_accuracy": float(row["val_accuracy"]),
                "test_accuracy": metrics.accuracy,
                "test_f1": metrics.f1,
                "test_metrics": asdict(metrics),  # promote reuses it: no second pass over test
                "checkpoint": str(checkpoint),
            }
        )
    return rows


def spread(runs: list[dict]) -> dict:
    """Mean and spread over seeds of the job's metric (val_*) and the test accuracy (test_*)."""
    val = [r["val"] for r in runs]
    test = [r["test_accuracy"] for r in runs]
    return {
        "val_mean": statistics.fmean(val),
        "val_std": statistics.stdev(val) if len(val) > 1 else 0.0,
        "test_mean": statistics.fmean(test),
        "test_std": statistics.stdev(test) if len(test) > 1 else 0.0,
    }
