"""Seed re-runs before promotion: the top-K configurations, trained to full length with S new seeds.

To run: caviar reseed results/<experiment> --seeds 3 [--top-k 3 | --top-k tied]   (or final: {seeds: 3})

One lucky seed can win a search; the mean over seeds is what the configuration is worth. `--top-k
tied` re-runs the best trial and those the validation set cannot tell from it (selection.py). The
configuration with the best mean of the job's VALIDATION metric leads (test only reports); each
other one is compared with it on the mean paired difference over seeds and examples. If some are
not separated from it, the cheapest of those (fewest parameters, then fewest steps) is chosen, and
the record says why. `caviar promote` takes the chosen configuration's best seed. Runs go to
<experiment>/reseed/config-<rank>/, in parallel on Ray.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict

import numpy as np

from caviar.experiment.intervals import seeded_difference
from caviar.experiment.layout import RESEED_FILE, Storage, reseed_dir
from caviar.experiment.object_store import Mirror, mirror_of, write_record
from caviar.experiment.record import Experiment, TrialRecord
from caviar.experiment.reseed_record import ReseedRecord
from caviar.experiment.selection import standings
from caviar.job import pretrain_search
from caviar.job.keys import set_dotted
from caviar.job.schema import FinalSpec, JobSpec
from caviar.tuning.search.tuner import build_tuner, fit
from model.checkpoint import weight_count
from model.data import Splits
from model.errors import UserError
from model.evaluate import evaluate_checkpoint
from model.predictions import Predictions


def seed_job(job: JobSpec, params: dict, seeds: list[int], rank: int) -> JobSpec:
    """The job with one configuration's values fixed, searching only over the seed, to full length."""
    raw = job.model_dump(mode="json")
    for key, value in params.items():
        set_dotted(raw, key, value)
    set_dotted(raw, "train.init_seed", None)  # a new seed is a new init and new dropout masks too
    if chosen := {k: v for k, v in params.items() if k.startswith(pretrain_search.PREFIX)}:
        raw["model"]["pretrained"] = job.stages.pretrained_by[pretrain_search.setting_key(chosen)]
    raw.update(
        name=f"{job.name}-reseed-{rank}",
        search_space={"train.seed": {"grid": seeds}},
        search="grid",
        scheduler={"type": "fifo"},
        fuse=1,  # each seed is its own data order: seeds never share a fused group
        num_samples=1,
        rounds=1,
        checkpoint={"num_to_keep": 1, "keep_best_trials": None},
    )
    return JobSpec.model_validate(raw)


def reseed(experiment: Experiment, final: FinalSpec, splits: Splits) -> ReseedRecord:
    """Re-train the experiment's top-K configurations (or, with top_k 'tied', the best and those tied
    with it) with `seeds` new seeds each (Ray is running); choose on the job's metric (validation),
    report the test file's verdict, and record it all in reseed/reseed.json, which `caviar promote` reads."""
    job, seeds = experiment.job, final.seeds
    top, picked = to_rerun(experiment, final.top_k, final.max_tied)
    folder = reseed_dir(experiment.folder)
    folder.mkdir(exist_ok=True)
    mirror = mirror_of(experiment.folder)  # on object storage: the re-runs go to the store beside it
    storage = Storage(mirror.uri_of(folder) if mirror else str(folder))
    configs, positives, labels = [], {}, None
    seed_list = [job.train.seed + 1000 * i for i in range(1, seeds + 1)]  # the same seeds for each: paired
    for rank, trial in enumerate(top, start=1):
        seeded = seed_job(job, trial.params, seed_list, rank)
        fit(build_tuner(seeded, f"config-{rank}", storage, splits))
        if mirror is not None:
            mirror.pull()
        runs = Experiment.load(folder / f"config-{rank}", job)
        runs_of_rank, labels, positives[rank] = _seed_runs(runs, rank, splits.test, mirror)
        configs.append(
            {
                "rank": rank,
                "source_trial": trial.trial_id,
                "params": trial.params,
                "runs": runs_of_rank,
                **spread(runs_of_rank),
            }
        )
    choice = choose(configs, labels, positives, job.metric, job.mode)
    chosen = next(c for c in configs if c["rank"] == choice["chosen_rank"])
    sign = 1 if job.mode == "max" else -1  # the job's metric may be a loss
    best_run = max(chosen["runs"], key=lambda r: sign * r["val"])
    outcome = {
        "seeds": seeds,
        "top_k": len(configs),
        "picked": picked,
        "metric": job.metric,
        "configs": configs,
        **choice,
        "best_run": best_run,
    }
    record = ReseedRecord.from_json(outcome)
    write_record(folder / RESEED_FILE, record.as_json())
    return record


def to_rerun(experiment: Experiment, top_k: int | str, max_tied: int) -> tuple[list[TrialRecord], str]:
    """The trials to re-run, best first, and a line saying how they were picked."""
    ranked = [trial for trial, _ in experiment.ranked()]
    if not ranked:
        raise UserError(f"{experiment.folder}: no trial reported {experiment.job.metric}; nothing to re-run")
    if top_k != "tied":
        return ranked[: int(top_k)], f"the top {min(int(top_k), len(ranked))} by {experiment.job.metric}"
    found = standings(experiment)
    tied = [t for t in ranked[1:] if (s := found.get(t.trial_id)) is not None and s.tied]
    left_out = f", {len(tied) - max_tied} more left out (final.max_tied {max_tied})" if len(tied) > max_tied else ""
    return [ranked[0], *tied[:max_tied]], f"the best and {len(tied)} tied with it (paired 95%){left_out}"


def choose(configs: list[dict], labels: np.ndarray, positives: dict[int, np.ndarray], metric: str, mode: str) -> dict:
    """The configuration promotion takes, and why. The best mean leads; a configuration whose mean
    paired difference from it (over seeds and examples, 95%) holds 0 is not separated from it, and
    among the leader and those, the cheapest wins: fewest parameters, then fewest steps, then the
    better mean."""
    sign = 1 if mode == "max" else -1
    leader = max(configs, key=lambda c: sign * c["val_mean"])
    for config in configs:
        if config is leader:
            continue
        diff = seeded_difference(metric, labels, positives[leader["rank"]], positives[config["rank"]])
        config["vs_leader"] = {
            "difference": diff.value,
            "interval": diff.as_list(),
            "n": diff.n,
            "separated": not diff.tied,
        }
    close = [leader, *(c for c in configs if c is not leader and not c["vs_leader"]["separated"])]
    cheapest = min(close, key=lambda c: (c["parameters"], c["steps"], -sign * c["val_mean"]))
    if len(configs) == 1:
        why = f"the only configuration re-run; best mean {metric} over seeds"
    elif len(close) == 1:
        why = (
            f"best mean {metric} over seeds, separated from every other configuration (paired 95%, seeds and examples)"
        )
    else:
        ranks = ", ".join(str(c["rank"]) for c in close)
        why = (
            f"configurations {ranks} are not separated by their mean {metric} over seeds and examples "
            f"(paired 95%); the cheapest of them (fewest parameters, then fewest steps) is chosen"
            + ("" if cheapest is not leader else ", which is also the best mean")
        )
    return {"leader_rank": leader["rank"], "chosen_rank": cheapest["rank"], "chosen_because": why}


def _seed_runs(runs: Experiment, rank: int, test, mirror: Mirror | None) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """Each seed's best evaluation by the job's metric (its checkpoint scored on the test file), and
    the validation labels and those checkpoints' P(긍정), [seeds, n] in the seeds' order. On object
    storage each checkpoint is recorded by its URI, its weights fetched to score it."""
    rows, kept = [], []
    for run in sorted(runs.trials(), key=lambda r: r.params["train.seed"]):
        row = run.best_row(runs.job.metric, runs.job.mode)
        checkpoint = runs.best_checkpoint(run)
        if row is None or checkpoint is None:
            raise UserError(f"re-run {run.trial_id} of configuration {rank} failed: {run.error or 'no report'}")
        if (predictions := Predictions.load(checkpoint)) is None:
            raise UserError(f"{checkpoint}: holds no validation predictions; the re-runs cannot be compared")
        kept.append(predictions)
        if mirror is not None:
            mirror.complete(checkpoint)
        metrics = evaluate_checkpoint(checkpoint, test)
        rows.append(
            {
                "seed": run.params["train.seed"],
                "val": float(row[runs.job.metric]),  # the job's metric: what chooses
                "val_accuracy": float(row["val_accuracy"]),
                "test_accuracy": metrics.accuracy,
                "test_f1": metrics.f1,
                "test_metrics": asdict(metrics),  # promote reuses it: no second pass over test
                "checkpoint": mirror.uri_of(checkpoint) if mirror else str(checkpoint),
                "parameters": weight_count(checkpoint),
                "steps": int(run.history["step"].max()),
            }
        )
    return rows, kept[0].labels, np.stack([p.positive for p in kept])


def spread(runs: list[dict]) -> dict:
    """Mean and spread over seeds of the job's metric (val_*) and the test accuracy (test_*), and the
    configuration's cost: its parameters and the steps it trained."""
    val = [r["val"] for r in runs]
    test = [r["test_accuracy"] for r in runs]
    return {
        "parameters": runs[0]["parameters"],
        "steps": max(r["steps"] for r in runs),
        "val_mean": statistics.fmean(val),
        "val_std": statistics.stdev(val) if len(val) > 1 else 0.0,
        "test_mean": statistics.fmean(test),
        "test_std": statistics.stdev(test) if len(test) > 1 else 0.0,
    }
