"""`caviar tune`: many configurations of the sentiment model at once on Ray Tune; weak ones stopped early.

To run: caviar tune tune_jobs/quickstart.yaml            (local Ray on this machine)
        caviar tune tune_jobs/nsmc_asha.yaml --address auto   (an existing cluster)

The same code runs locally and on a cluster: only the address changes.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path

from caviar import schedulers
from caviar.atomic_fs import atomic_local_filesystem
from caviar.experiment import JOB_FILE, ROUNDS_FILE, interrupted, load_trials, prepare_resume
from caviar.rounds import describe_space, narrow_space, read_space
from caviar.space import param_space
from caviar.spec import JobSpec
from caviar.summary import Interrupted, finish
from caviar.tensorboard import TrialTensorBoard
from caviar.trainable import run_trial
from model.atomic import write_json_atomically
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


def is_remote(storage: str) -> bool:
    return "://" in storage


def storage_root(job: JobSpec) -> str:
    return job.storage if is_remote(job.storage) else str(Path(job.storage).expanduser().resolve())


def start_ray(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the classic live table, with our columns
    # Ray turns token auth on by default for a local cluster (kept on), and warns that it did on
    # every start; that line tells a user nothing to do, so it is muted
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
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


def build_tuner(job: JobSpec, experiment: str, restore_from: Path | None = None, root: str | None = None):
    from ray import tune

    splits = load_splits(job.data)  # once, in the driver; trials get it through the object store
    plan = prepare_resume(restore_from) if restore_from is not None else None
    trainable = tune.with_parameters(
        run_trial,
        base=job.trial_config().model_dump(),
        splits=splits,
        cpus=job.resources_per_trial.cpu,
        replay=plan.replay if plan else frozenset(),
    )
    trainable = tune.with_resources(trainable, {"cpu": job.resources_per_trial.cpu, "gpu": job.resources_per_trial.gpu})
    if restore_from is not None:
        for move in plan.moved:
            log.warning("the saved state named a deleted checkpoint; resuming from the newest one: %s", move)
        return tune.Tuner.restore(
            str(restore_from),
            trainable,
            resume_unfinished=True,
            resume_errored=True,
            storage_filesystem=atomic_local_filesystem(),
        )

    root = root or storage_root(job)
    local_dir = None if is_remote(root) else Path(root) / experiment
    QuietReporter = _quiet_reporter_class()
    reporter = QuietReporter(
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
            max_concurrent_trials=schedulers.concurrency_limit(job) if job.search == "optuna" else None,
            time_budget_s=job.time_budget_s,
            reuse_actors=schedulers.reuse_actors(job),
        ),
        run_config=tune.RunConfig(
            name=experiment,
            storage_path=root,
            storage_filesystem=None if is_remote(root) else atomic_local_filesystem(),
            checkpoint_config=tune.CheckpointConfig(
                # PBT restores OTHER trials' checkpoints, which num_to_keep could delete first; keep all
                # while it runs, and prune at the end like every job
                num_to_keep=None if job.scheduler.type == "pbt" else job.checkpoint.num_to_keep,
                checkpoint_score_attribute=job.metric,
                checkpoint_score_order=job.mode,
            ),
            failure_config=tune.FailureConfig(max_failures=job.max_failures),
            callbacks=[TrialTensorBoard(local_dir)],
            progress_reporter=reporter,
            verbose=1,
        ),
    )


def _quiet_reporter_class():
    from ray import tune

    class QuietReporter(tune.CLIReporter):
        """Ray's live table without its 'Result logdir: /tmp/ray/session_.../driver_artifacts' line:
        that folder is Ray's scratch copy, not where results go (caviar prints the experiment folder)."""

        def _progress_str(self, *args, **kwargs) -> str:
            text = super()._progress_str(*args, **kwargs)
            return "\n".join(line for line in text.split("\n") if not line.startswith("Result logdir:"))

    return QuietReporter


def tune_job(job: JobSpec, address: str | None = None, experiment: str | None = None) -> dict:
    leave_job_working_dir(job)
    experiment = experiment or f"{job.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    root = storage_root(job)
    experiment_dir = Path(root) / experiment
    if not is_remote(root):
        if (experiment_dir / JOB_FILE).exists():
            raise UserError(f"{experiment_dir} already holds an experiment; pick another --name or caviar resume it")
        try:
            experiment_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(f"{experiment_dir}: cannot create the experiment folder ({err.strerror})") from None
    if job.lr_from_lr_find:
        job = resolve_lr(job, experiment_dir if not is_remote(root) else Path(tempfile.mkdtemp()))
    if not is_remote(root):
        write_json_atomically(experiment_dir / JOB_FILE, job.model_dump(mode="json"))  # resume rebuilds this
    return run(job, experiment_dir, address, restore=False)


def run(job: JobSpec, experiment_dir: Path, address: str | None, restore: bool) -> dict:
    """Start (or join) Ray, run the job's rounds or its one Tuner, then summarize from disk."""
    started = time.perf_counter()
    start_ray(address)
    check_resources(job)
    if job.rounds > 1:
        run_rounds(job, experiment_dir)
    else:
        build_tuner(job, experiment_dir.name, restore_from=experiment_dir if restore else None).fit()
    root = storage_root(job)
    if is_remote(root):  # Path() has already folded "s3://" into "s3:/": ask the job
        log.warning("remote storage: summary and checkpoint pruning need a local copy of %s", experiment_dir)
        return {"experiment_dir": f"{root}/{experiment_dir.name}", "wall_s": time.perf_counter() - started}
    return finish(job, experiment_dir, time.perf_counter() - started)


def resolve_lr(job: JobSpec, folder: Path) -> JobSpec:
    """Run the LR range test in the driver, then search log-uniformly inside what it suggests."""
    from caviar.lr_find import lr_find

    found = lr_find(job, folder, progress=True)
    log.info("train.lr from lr-find: loguniform [%.2e, %.2e]", found["base_lr"], found["max_lr"])
    return job.with_lr_range(found["base_lr"], found["max_lr"])


def resume_experiment(experiment_dir: Path, address: str | None = None) -> dict:
    from caviar.experiment import load_job_of

    experiment_dir = Path(experiment_dir).resolve()
    job = load_job_of(experiment_dir)
    leave_job_working_dir(job)
    from ray import tune

    if job.rounds == 1 and not tune.Tuner.can_restore(str(experiment_dir)):
        raise UserError(f"{experiment_dir} cannot be resumed: Ray saved no experiment state there")
    return run(job, experiment_dir, address, restore=True)


def run_rounds(job: JobSpec, experiment_dir: Path) -> None:
    """Run, or continue, every round in <experiment>/round-<r>; the lineage file records each round's
    space before it starts, so a resumed experiment searches exactly the same ranges."""
    from ray import tune

    lineage_file = experiment_dir / ROUNDS_FILE
    lineage = json.loads(lineage_file.read_text(encoding="utf-8")) if lineage_file.is_file() else []
    for r in range(1, job.rounds + 1):
        folder = experiment_dir / f"round-{r}"
        if r > len(lineage):
            space = (
                job.search_space
                if r == 1
                else narrow_space(
                    read_space(lineage[-1]["space"]),
                    top_params(experiment_dir / f"round-{r - 1}", job),
                    job.refine.margin,
                )
            )
            lineage.append({"round": r, "space": describe_space(space), "folder": folder.name})
            write_json_atomically(lineage_file, lineage)
            log.info("round %d/%d searches %s", r, job.rounds, lineage[-1]["space"])
        round_job = job.model_copy(update={"search_space": read_space(lineage[r - 1]["space"])})
        if folder.is_dir() and tune.Tuner.can_restore(str(folder)):
            if not interrupted(load_trials(folder)):
                continue
            build_tuner(round_job, folder.name, restore_from=folder).fit()
        else:
            build_tuner(round_job, folder.name, root=str(experiment_dir)).fit()
        if interrupted(load_trials(folder)):
            raise Interrupted(experiment_dir)


def top_params(round_dir: Path, job: JobSpec) -> list[dict]:
    """The sampled values of a round's top-k trials, ranked by their best evaluation."""
    scored = [
        (row[job.metric], t.params)
        for t in load_trials(round_dir)
        if (row := t.best_row(job.metric, job.mode)) is not None
    ]
    scored.sort(key=lambda sp: sp[0], reverse=job.mode == "max")
    return [params for _, params in scored[: job.refine.top_k]]
