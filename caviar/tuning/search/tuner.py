"""Building one Ray Tune `Tuner` for a job: its trainable, space, scheduler, search, storage, live
table and TensorBoard; or restoring one. tuning/pipeline.py decides which Tuners run, and when.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
from pathlib import Path

from caviar.experiment.layout import RAY_TUNER_STATE, Storage
from caviar.experiment.object_store import filesystem as filesystem_of
from caviar.experiment.object_store import mirror_of
from caviar.experiment.record import load_trials
from caviar.job.schema import JobSpec
from caviar.ops.disk_guard import DiskGuard
from caviar.ops.disk_room import reserve_bytes
from caviar.tuning.members.fused_search import fused_trainable
from caviar.tuning.members.fusion import GROUP_KEY
from caviar.tuning.ray_compat.atomic_storage import atomic_local_filesystem
from caviar.tuning.ray_compat.moved_modules import alias_moved_modules
from caviar.tuning.ray_compat.progress import fit as fit  # re-exported: build or restore, then fit
from caviar.tuning.ray_compat.progress import quiet_reporter
from caviar.tuning.ray_compat.resume_repair import prepare_resume
from caviar.tuning.ray_compat.stale_staging import forget_earlier_drivers
from caviar.tuning.ray_compat.state_signature import check_signed, trust
from caviar.tuning.ray_compat.state_snapshot import install as snapshot_states_together
from caviar.tuning.ray_compat.state_snapshot import newest_state, restore_side_states
from caviar.tuning.ray_compat.tensorboard import TrialTensorBoard
from caviar.tuning.ray_compat.time_budget import TimeBudget
from caviar.tuning.search import schedulers
from caviar.tuning.search.live_lines import LiveLines
from caviar.tuning.search.search_space import param_space
from caviar.tuning.search.trial import run_trial
from model.config import METRICS
from model.data import Splits
from model.errors import UserError, short
from model.settings import settings

log = logging.getLogger("caviar.tune")
SHORT_NAMES = {"val_accuracy": "val_acc", "examples_per_s": "ex/s"}  # the live table's narrow columns
LIVE_COLUMNS = {m: SHORT_NAMES.get(m, m) for m in (*METRICS, "epoch", "examples_per_s") if m != "val_f1"}


def trainable_of(job: JobSpec, splits: Splits, replay: dict[str, int] | None = None):
    """run_trial with the job's fixed values and the splits bound (loaded once, in the driver: trials
    get them through the object store), and the resources each trial asks for."""
    from ray import tune

    bound = tune.with_parameters(
        run_trial,
        base=job.trial_base(),
        splits=splits,
        cpus=job.resources_per_trial.cpu,
        replay=replay or {},
    )
    return tune.with_resources(bound, {"cpu": job.resources_per_trial.cpu, "gpu": job.resources_per_trial.gpu})


def restore_tuner(job: JobSpec, folder: Path, splits: Splits):
    """The Tuner of an interrupted run, its saved state repaired first (ray_compat.resume_repair)."""
    from ray import tune

    check_tuner_state(folder)
    snapshot_states_together()
    mirror = mirror_of(folder)  # on object storage: the repairs below go to the store too
    with mirror.changes_pushed(folder) if mirror else contextlib.nullcontext():
        restore_side_states(Path(folder))  # the searcher as it was when the trials' statuses were saved
    records = load_trials(folder, members=False)  # Ray's trials: a fused group is one
    plan = prepare_resume(records, mirror.rename_dir, mirror.changes_pushed) if mirror else prepare_resume(records)
    for move in plan.moved:
        log.warning("the saved state named a deleted checkpoint; resuming from the newest one: %s", move)
    if plan.cut:
        log.warning("results recorded after the saved checkpoint are run again, once: %s", ", ".join(plan.cut))
    if job.fused:
        trainable, _ = fused_trainable(job, splits, str(folder), records=records)
    else:
        trainable = trainable_of(job, splits, plan.replay)
    filesystem, path = filesystem_of(mirror.uri_of(folder)) if mirror else (atomic_local_filesystem(), str(folder))
    forget_earlier_drivers(Path(folder).name)  # their files in this Ray session would go back over the cut
    tuner = tune.Tuner.restore(
        path, trainable, resume_unfinished=True, resume_errored=True, storage_filesystem=filesystem
    )
    schedulers.keep_scheduler_decisions(tuner, records, job)
    return tuner


def check_tuner_state(folder: Path) -> None:
    """Ray's tuner.pkl must unpickle (Ray reads it first, and a damaged one was a ValueError traceback).
    First, it and the experiment state must be what caviar signed (ray_compat.state_signature):
    nothing from another's folder is unpickled, here or by Ray."""
    path = Path(folder) / RAY_TUNER_STATE
    if not path.is_file():
        raise UserError(f"{path}: missing; Ray cannot resume an experiment without it")
    check_signed(folder, newest_state(folder))
    alias_moved_modules()  # an experiment made before tuning/'s modules moved names their old paths
    try:
        with path.open("rb") as file:
            pickle.load(file)  # noqa: S301
    except Exception as err:  # garbage raises anything from UnpicklingError to ValueError
        raise UserError(f"{path}: damaged, Ray's tuner state cannot be read ({short(err, 100)})") from None


def trust_saved_state(experiment_dir: Path) -> list[str]:
    """`caviar resume --trust-state`: sign the experiment's Ray state (every round's) with this
    user's key, as if caviar had saved it here; the user vouches for where it came from."""
    folders = [Path(experiment_dir), *sorted(Path(experiment_dir).glob("round-*"))]
    mirror = mirror_of(experiment_dir)  # on object storage: the signed state goes to the store too
    signed = []
    with mirror.changes_pushed(experiment_dir) if mirror else contextlib.nullcontext():
        for folder in folders:
            if (state := newest_state(folder)) is not None:
                trust(folder, state)
                log.warning("signed as trusted, at your word: %s", state)
                signed.append(str(state))
    return signed


def build_tuner(job: JobSpec, experiment: str, storage: Storage, splits: Splits):
    """A fresh Tuner writing to <storage>/<experiment>."""
    from ray import tune

    snapshot_states_together()
    if job.fused:  # one Ray trial per group; ASHA stops members inside them (tuning/members/fused_search.py)
        (trainable, space), num_samples = fused_trainable(job, splits, storage.uri(experiment)), 1
    else:
        (trainable, space), num_samples = (trainable_of(job, splits), param_space(job)), job.num_samples
    scheduler = schedulers.build_scheduler(job)  # Ray's: FIFO over a fused job's groups
    return tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(
            metric=job.metric,
            mode=job.mode,
            scheduler=scheduler,
            search_alg=schedulers.build_search(job),
            num_samples=num_samples,
            max_concurrent_trials=schedulers.concurrency_limit(job) if job.search == "optuna" else None,
            reuse_actors=schedulers.reuse_actors(job),
        ),
        run_config=_run_config(job, experiment, storage),
    )


def _run_config(job: JobSpec, experiment: str, storage: Storage):
    from ray import tune

    folder = None if storage.is_remote else storage.local(experiment)
    budget = TimeBudget(job.time_budget_s, local=not storage.is_remote) if job.time_budget_s else None
    # on object storage, caviar's own filesystem: it honours AWS_ENDPOINT_URL, which pyarrow's does not
    filesystem, path = filesystem_of(storage.root) if storage.is_remote else (atomic_local_filesystem(), storage.root)
    return tune.RunConfig(
        name=experiment,
        storage_path=path,
        storage_filesystem=filesystem,
        checkpoint_config=_checkpoint_config(job),
        failure_config=tune.FailureConfig(max_failures=job.max_failures),
        stop=budget,  # the job's time_budget_s, which also records the trials it cuts
        callbacks=[
            TrialTensorBoard(folder),
            *([budget] if budget else []),
            *([DiskGuard(folder, reserve_bytes(job))] if folder else []),
        ],
        progress_reporter=_live_table(job),
        verbose=1,
        # a fused trial writes its members' folders (records, checkpoints) in the trial's own folder
        # on its node: on object storage Ray copies that folder up at each group checkpoint
        sync_config=tune.SyncConfig(sync_artifacts=storage.is_remote and job.fused, sync_artifacts_on_checkpoint=True),
    )


def _checkpoint_config(job: JobSpec):
    from ray import tune

    if job.fused:  # a group's checkpoint is for resuming it: the newest one; members keep their own best
        return tune.CheckpointConfig(num_to_keep=1)
    return tune.CheckpointConfig(
        # PBT restores OTHER trials' checkpoints, which num_to_keep could delete first; keep all
        # while it runs, and prune at the end like every job
        num_to_keep=None if schedulers.kind_of(job).restores_other_trials else job.checkpoint.num_to_keep,
        checkpoint_score_attribute=job.metric,
        checkpoint_score_order=job.mode,
    )


def _live_table(job: JobSpec):
    """caviar's line per change (tuning/live.py), or with --verbose Ray's own table, whose columns
    are set here: a fused job's Ray trials are groups, each reporting its best member."""
    if not settings().verbose:
        counts_evaluations = getattr(job.scheduler, "time_attr", "training_iteration") == "training_iteration"
        return LiveLines(
            job.metric,
            job.mode,
            [GROUP_KEY] if job.fused else list(job.search_space),
            getattr(job.scheduler, "max_t", None) if counts_evaluations else None,
            job.scheduler.type,
            job.time_budget_s,
        )
    if job.fused:
        return quiet_reporter(
            {job.metric: SHORT_NAMES.get(job.metric, job.metric), "members_live": "live"}, {GROUP_KEY: "group"}
        )
    return quiet_reporter(LIVE_COLUMNS, {k.replace(".", "/"): k for k in job.search_space})
