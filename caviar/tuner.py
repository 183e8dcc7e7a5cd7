"""`caviar tune`: many configurations of the sentiment model at once on Ray Tune; weak ones stopped early.

To run: caviar tune tune_jobs/quickstart.yaml            (local Ray on this machine)
        caviar tune tune_jobs/nsmc_asha.yaml --address auto   (an existing cluster)

The same code runs locally and on a cluster: only the address changes.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

from caviar import schedulers
from caviar.disk import checkpoint_bytes, prune
from caviar.experiment import JOB_FILE, SUMMARY_FILE, best_trial, load_trials
from caviar.space import flatten, param_space
from caviar.spec import JobSpec
from caviar.tensorboard import TrialTensorBoard
from caviar.trainable import run_trial
from model.checkpoint import write_json_atomically
from model.data import load_splits
from model.errors import UserError

log = logging.getLogger("caviar.tune")
METRIC_COLUMNS = {
    "val_accuracy": "val_acc",
    "val_loss": "val_loss",
    "train_loss": "train_loss",
    "epoch": "epoch",
    "examples_per_s": "ex/s",
}


class Interrupted(Exception):
    """The run stopped before its trials finished (Ctrl+C); the experiment can be resumed."""

    def __init__(self, experiment_dir: Path):
        super().__init__(f"interrupted; continue with: caviar resume {experiment_dir}")
        self.experiment_dir = experiment_dir


def is_remote(storage: str) -> bool:
    return "://" in storage


def storage_root(job: JobSpec) -> str:
    return job.storage if is_remote(job.storage) else str(Path(job.storage).expanduser().resolve())


def start_ray(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the classic live table, with our columns
    # each report saves a checkpoint, so Ray snapshots often: by design here, not a bottleneck to warn of
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    kwargs = {"logging_level": logging.WARNING, "log_to_driver": True, "configure_logging": True}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(include_dashboard=False, **kwargs)


def leave_job_working_dir(job: JobSpec) -> None:
    """Inside a Ray job, the runtime-env agent replaces the job's working_dir with a fresh copy when
    workers start on this node, which deletes the driver's cwd under it (os.getcwd() then fails
    inside Ray Tune). Imports are unaffected: sys.path holds the absolute path, which the copy
    re-creates. So resolve relative data paths first, then work from a stable folder."""
    try:
        cwd = os.getcwd()
    except FileNotFoundError:
        cwd = None
    if cwd is not None and "working_dir_files" not in cwd:
        return
    if job.data.dir and cwd and not Path(job.data.dir).is_absolute():
        job.data.dir = str(Path(cwd, job.data.dir))
    os.chdir(tempfile.gettempdir())


def check_resources(job: JobSpec) -> None:
    """More per trial than the whole cluster has would leave trials PENDING forever: stop now."""
    import ray

    have = ray.cluster_resources()
    for key, ray_key, need in (
        ("cpu", "CPU", job.resources_per_trial.cpu),
        ("gpu", "GPU", job.resources_per_trial.gpu),
    ):
        if need > (total := have.get(ray_key, 0)):
            raise UserError(f"resources_per_trial.{key}: {need:g} {ray_key}s per trial, but the cluster has {total:g}")


def build_tuner(job: JobSpec, experiment: str, restore_from: Path | None = None):
    from ray import tune

    splits = load_splits(job.data)  # once, in the driver; trials get it through the object store
    trainable = tune.with_parameters(
        run_trial, base=job.trial_config().model_dump(), splits=splits, cpus=job.resources_per_trial.cpu
    )
    trainable = tune.with_resources(trainable, {"cpu": job.resources_per_trial.cpu, "gpu": job.resources_per_trial.gpu})
    if restore_from is not None:
        return tune.Tuner.restore(str(restore_from), trainable, resume_unfinished=True, resume_errored=True)

    root = storage_root(job)
    local_dir = None if is_remote(root) else Path(root) / experiment
    reporter = tune.CLIReporter(
        metric_columns=METRIC_COLUMNS,
        parameter_columns={k.replace(".", "/"): k for k in job.search_space},
        max_report_frequency=15,
        sort_by_metric=True,  # metric and mode come from TuneConfig
    )
    return tune.Tuner(
        trainable,
        param_space=param_space(job),
        tune_config=tune.TuneConfig(
            metric=job.metric,
            mode=job.mode,
            scheduler=schedulers.build_scheduler(job),
            search_alg=schedulers.build_search(job),
            num_samples=job.num_samples,
            max_concurrent_trials=job.max_concurrent_trials if job.search == "optuna" else None,
            time_budget_s=job.time_budget_s,
            reuse_actors=True,  # one worker process runs trial after trial: no torch import per trial
        ),
        run_config=tune.RunConfig(
            name=experiment,
            storage_path=root,
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=job.checkpoint.num_to_keep,
                checkpoint_score_attribute=job.metric,
                checkpoint_score_order=job.mode,
            ),
            failure_config=tune.FailureConfig(max_failures=job.max_failures),
            callbacks=[TrialTensorBoard(local_dir)],
            progress_reporter=reporter,
            verbose=1,
        ),
    )


def tune_job(job: JobSpec, address: str | None = None, experiment: str | None = None) -> dict:
    leave_job_working_dir(job)
    experiment = experiment or f"{job.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    root = storage_root(job)
    experiment_dir = Path(root) / experiment
    if not is_remote(root):
        if (experiment_dir / JOB_FILE).exists():
            raise UserError(f"{experiment_dir} already holds an experiment; pick another --name or caviar resume it")
        experiment_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomically(experiment_dir / JOB_FILE, job.model_dump(mode="json"))
    started = time.perf_counter()
    start_ray(address)
    check_resources(job)
    build_tuner(job, experiment).fit()
    return finish(job, experiment_dir, time.perf_counter() - started)


def resume_experiment(experiment_dir: Path, address: str | None = None) -> dict:
    from caviar.experiment import load_job_of

    experiment_dir = Path(experiment_dir).resolve()
    job = load_job_of(experiment_dir)
    leave_job_working_dir(job)
    from ray import tune

    if not tune.Tuner.can_restore(str(experiment_dir)):
        raise UserError(f"{experiment_dir} cannot be resumed: Ray saved no experiment state there")
    started = time.perf_counter()
    start_ray(address)
    check_resources(job)
    build_tuner(job, experiment_dir.name, restore_from=experiment_dir).fit()
    return finish(job, experiment_dir, time.perf_counter() - started)


def finish(job: JobSpec, experiment_dir: Path, wall_s: float) -> dict:
    """Summarize from disk; prune checkpoints only once every trial has ended."""
    if is_remote(str(experiment_dir)):
        log.warning("remote storage: summary and checkpoint pruning need a local copy of %s", experiment_dir)
        return {"experiment_dir": str(experiment_dir), "wall_s": wall_s}
    trials = load_trials(experiment_dir)
    if any(t.status not in ("TERMINATED", "ERROR") for t in trials):
        raise Interrupted(experiment_dir)
    freed = prune(trials, job.metric, job.mode, job.checkpoint.keep_best_trials)
    total_bytes, largest = checkpoint_bytes(trials)
    best = best_trial(trials, job.metric, job.mode)
    if best is None:
        errors = [t.error for t in trials if t.error]
        raise UserError(f"no trial reported {job.metric}; first error: {errors[0] if errors else 'none recorded'}")
    trial, row = best
    checkpoint = trial.best_checkpoint(job.metric, job.mode)
    row = _row_of_checkpoint(trial, checkpoint, row, job.metric)
    bound = (job.checkpoint.keep_best_trials or len(trials)) + (job.max_concurrent_trials or len(trials))
    summary = {
        "experiment_dir": str(experiment_dir),
        "best_trial": trial.trial_id,
        "best_config": trial.params,
        f"best_{job.metric}": float(row[job.metric]),
        "best_val_accuracy": float(row["val_accuracy"]),
        "best_evaluation": int(row["training_iteration"]),
        "best_checkpoint": str(checkpoint),
        "trials": [
            {
                "trial_id": t.trial_id,
                "status": t.status,
                "evaluations": t.evaluations,
                f"best_{job.metric}": None if (r := t.best_row(job.metric, job.mode)) is None else float(r[job.metric]),
                "stopped_early": t.stopped_early,
                "params": t.params,
                **({"error": t.error} if t.error else {}),
            }
            for t in trials
        ],
        "stopped_early": sum(t.stopped_early for t in trials),
        "errored": sum(t.status == "ERROR" for t in trials),
        "wall_s": wall_s,
        "checkpoint_bytes": total_bytes,
        "checkpoint_bytes_bound": bound * largest,
        "checkpoint_bytes_freed": freed,
    }
    write_json_atomically(experiment_dir / SUMMARY_FILE, summary)
    return summary


def _row_of_checkpoint(trial, checkpoint, row, metric: str):
    """On a tie, name the evaluation whose checkpoint was kept, so the figures and the files agree."""
    if checkpoint is None:
        return row
    step = trial.checkpoint_metrics(checkpoint).get("step")
    match = trial.history[trial.history["step"] == step]
    return match.iloc[0] if len(match) and match.iloc[0][metric] == row[metric] else row


def describe_best(summary: dict, metric: str) -> list[str]:
    return [
        f"best trial {summary['best_trial']}: {metric} {summary[f'best_{metric}']:.4f} "
        f"at evaluation {summary['best_evaluation']}",
        "  " + ", ".join(f"{k}={_short(v)}" for k, v in flatten(summary["best_config"]).items()),
        f"  checkpoint: {summary['best_checkpoint']}",
        f"{len(summary['trials'])} trials, {summary['stopped_early']} stopped early, {summary['errored']} errored, "
        f"{summary['wall_s']:.0f}s; checkpoints on disk {summary['checkpoint_bytes'] / 2**20:.1f} MiB",
        f"experiment: {summary['experiment_dir']}",
        f"compare: tensorboard --logdir {summary['experiment_dir']}",
    ]


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
