"""Starting (or joining) Ray, and the checks a driver makes before it asks Ray for anything.

The same code runs locally and on a cluster: `address` decides where trials run.
"""

from __future__ import annotations

import logging
import os
import secrets
import warnings
from pathlib import Path

from caviar.job.schema import JobSpec
from caviar.tuning.ray_compat.connection import HOW_TO_START, check_reachable
from caviar.tuning.ray_compat.progress import trim_ray_logs
from model.errors import UserError, short


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
    trim_ray_logs()  # caviar prints its own `caviar resume` line, and one line for a full disk
    kwargs = {"logging_level": logging.WARNING, "log_to_driver": True, "configure_logging": True}
    if not address:
        ray.init(include_dashboard=False, **kwargs)
        return
    check_reachable(address)
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError) as err:
        raise UserError(
            f"--address {address}: cannot join the Ray cluster ({short(err, 160)}); {HOW_TO_START}"
        ) from None


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


def check_storage_shared(folder: Path) -> None:
    """Local storage must be one every node sees (a shared mount): a trial on a node that does not
    see it writes checkpoints the driver never finds. One task per other node looks for a marker the
    driver wrote; a node that cannot see it stops the job before its first trial, in one line."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive") and n["NodeID"] != ray.get_runtime_context().get_node_id()]
    if not nodes:
        return
    sees = ray.remote(num_cpus=0, max_retries=0)(os.path.exists)
    marker = Path(folder) / f".caviar-shared-{secrets.token_hex(8)}"
    marker.write_text("seen by every node\n", encoding="utf-8")
    try:
        seen = ray.get(
            [
                sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
                    str(marker)
                )
                for n in nodes
            ],
            timeout=SHARED_PROBE_TIMEOUT_S,
        )
    finally:
        marker.unlink(missing_ok=True)
    blind = [n["NodeManagerAddress"] + f" ({n['NodeID'][:8]})" for n, ok in zip(nodes, seen, strict=True) if not ok]
    if blind:
        raise UserError(
            f"storage {folder}: {len(blind)} of the cluster's nodes do not see it ({blind[0]}), so their trials' "
            "checkpoints would never reach this driver; use object storage (--set storage=s3://bucket/path) "
            "or a folder every node mounts"
        )


SHARED_PROBE_TIMEOUT_S = 120  # bounds a stuck node only; a probe answers in about a second
