"""Starting (or joining) Ray, and the checks a driver makes before it asks Ray for anything.

The same code runs locally and on a cluster: `address` decides where trials run.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from pathlib import Path

from caviar.job.schema import JobSpec
from model.errors import UserError


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
    # PBT runs without actor reuse on purpose (schedulers.reuse_actors); Ray's advice to turn it on
    # would send a user toward the stall that choice avoids
    warnings.filterwarnings("ignore", message="Consider boosting PBT performance", category=UserWarning)
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
