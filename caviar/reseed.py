"""Seed re-runs before promotion: the top-K configurations, trained to full length with S new seeds.

To run: caviar promote results/<experiment> --reseed 3 [--top-k 3]

One lucky seed can win a search; the mean over seeds is what the configuration is worth. The
configuration with the best mean VALIDATION accuracy is chosen (test only reports), and its best
seed's checkpoint is promoted. Runs go to <experiment>/reseed/config-<rank>/, in parallel on Ray.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict
from pathlib import Path

from caviar.experiment import TrialRecord, load_trials
from caviar.spec import JobSpec
from model.atomic import write_json_atomically
from model.data import load_splits
from model.errors import UserError
from model.evaluate import evaluate_checkpoint

RESEED_DIR, RESEED_FILE = "reseed", "reseed.json"


def ranked(trials: list[TrialRecord], job: JobSpec) -> list[TrialRecord]:
    scored = [(row[job.metric], t) for t in trials if (row := t.best_row(job.metric, job.mode)) is not None]
    scored.sort(key=lambda st: st[0], reverse=job.mode == "max")
    return [t for _, t in scored]


def seed_job(job: JobSpec, params: dict, seeds: list[int], rank: int) -> JobSpec:
    """The job with one configuration's values fixed, searching only over the seed, to full length."""
    raw = job.model_dump(mode="json")
    for key, value in params.items():
        section, _, leaf = key.partition(".")
        raw[section][leaf] = value
    raw.update(
        name=f"{job.name}-reseed-{rank}",
        search_space={"train.seed": {"grid": seeds}},
        search="grid",
        scheduler={"type": "fifo"},
        num_samples=1,
        rounds=1,
        lr_from_lr_find=False,
        checkpoint={"num_to_keep": 1, "keep_best_trials": None},
    )
    return JobSpec.model_validate(raw)


def reseed(experiment_dir: Path, job: JobSpec, seeds: int, top_k: int) -> dict:
    from caviar.tuner import build_tuner, check_resources, start_ray

    top = ranked(load_trials(experiment_dir), job)[:top_k]
    if not top:
        raise UserError(f"{experiment_dir}: no trial reported {job.metric}; nothing to re-run")
    test = load_splits(job.data).test
    folder = experiment_dir / RESEED_DIR
    folder.mkdir(exist_ok=True)
    start_ray(None)
    check_resources(job)
    configs = []
    for rank, trial in enumerate(top, start=1):
        seed_list = [job.train.seed + 1000 * i for i in range(1, seeds + 1)]
        build_tuner(seed_job(job, trial.params, seed_list, rank), f"config-{rank}", root=str(folder)).fit()
        runs = []
        for run in load_trials(folder / f"config-{rank}"):
            row = run.best_row("val_accuracy", "max")
            checkpoint = run.best_checkpoint("val_accuracy", "max")
            if row is None or checkpoint is None:
                raise UserError(f"re-run {run.trial_id} of configuration {rank} failed: {run.error or 'no report'}")
            metrics = evaluate_checkpoint(checkpoint, test)
            runs.append(
                {
                    "seed": run.params["train.seed"],
                    "val_accuracy": float(row["val_accuracy"]),
                    "test_accuracy": metrics.accuracy,
                    "test_f1": metrics.f1,
                    "test_metrics": asdict(metrics),  # promote reuses it: no second pass over test
                    "checkpoint": str(checkpoint),
                }
            )
        configs.append(
            {"rank": rank, "source_trial": trial.trial_id, "params": trial.params, "runs": runs, **spread(runs)}
        )
    chosen = max(configs, key=lambda c: c["val_mean"])
    best_run = max(chosen["runs"], key=lambda r: r["val_accuracy"])
    outcome = {
        "seeds": seeds,
        "top_k": len(configs),
        "configs": configs,
        "chosen_rank": chosen["rank"],
        "best_run": best_run,
    }
    write_json_atomically(folder / RESEED_FILE, outcome)
    return outcome


def spread(runs: list[dict]) -> dict:
    val = [r["val_accuracy"] for r in runs]
    test = [r["test_accuracy"] for r in runs]
    return {
        "val_mean": statistics.fmean(val),
        "val_std": statistics.stdev(val) if len(val) > 1 else 0.0,
        "test_mean": statistics.fmean(test),
        "test_std": statistics.stdev(test) if len(test) > 1 else 0.0,
    }
