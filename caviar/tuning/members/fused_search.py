"""The Ray side of `fuse: K`: one Ray trial per fused group, and the experiment's member rung table.

Ray searches over one value, the group's index (a grid over the groups tuning/members/fusion.py drew), with
FIFO at Ray's level: ASHA acts on members, inside the trials, through the rung table. The driver
makes that table (a named actor that lives as long as the driver) before any trial starts; on
`caviar resume` it is filled again from the members' recorded results.
"""

from __future__ import annotations

import hashlib
import logging

from caviar.experiment.members import members_of
from caviar.experiment.record import TrialRecord
from caviar.job.schema import JobSpec
from caviar.tuning.members.fused_trial import run_fused_trial
from caviar.tuning.members.fusion import GROUP_KEY, fused_groups
from caviar.tuning.members.member_rungs import RungsSpec, actor_for
from caviar.tuning.search.schedulers import kind_of
from model.data import Splits

log = logging.getLogger("caviar.tune")
_held: dict[str, object] = {}  # the driver's handles: the tables live while it does


def rungs_spec(job: JobSpec, experiment_uri: str) -> RungsSpec:
    return RungsSpec(
        experiment=hashlib.sha1(experiment_uri.encode()).hexdigest()[:16],  # noqa: S324 - a name, not security
        rule=kind_of(job).member_rule(job.scheduler, job.mode),
        metric=job.metric,
        mode=job.mode,
    )


def fused_trainable(job: JobSpec, splits: Splits, experiment_uri: str, records: list[TrialRecord] | None = None):
    """The fused trainable with the groups, splits and rung table bound; `records` (a resume: Ray's
    trials, the groups) fill the table with what their members recorded before any trial restarts."""
    from ray import tune

    groups = fused_groups(job)
    spec = rungs_spec(job, experiment_uri)
    table = actor_for(spec.experiment, spec.rule)
    if table is not None:
        _held[spec.experiment] = table
        if records:
            import ray

            histories, finished = recorded_results(records, job.metric)
            written = ray.get(table.rebuild.remote(histories, finished))
            log.info("resume: the member table rebuilt from %d recorded results", written)
    bound = tune.with_parameters(
        run_fused_trial,
        base=job.trial_base(),
        groups=groups,
        splits=splits,
        cpus=job.resources_per_trial.cpu,
        rungs=spec,
    )
    resources = {"cpu": job.resources_per_trial.cpu, "gpu": job.resources_per_trial.gpu}
    return tune.with_resources(bound, resources), {GROUP_KEY: tune.grid_search(list(range(len(groups))))}


def recorded_results(
    groups: list[TrialRecord], metric: str
) -> tuple[dict[str, list[tuple[int, float]]], frozenset[str]]:
    """Each member's (evaluation, metric) results that its group will not report again: all of a
    finished group's, and an unfinished one's up to the checkpoint it resumes from (none without
    one: it starts over); and the members among them that finished training. A member's rows can
    run ahead of its group's checkpoint by the evaluation written just before a kill."""
    out, finished = {}, set()
    for group in groups:
        step = group.resume_step  # the rule a trial's replay keeps (TrialRecord.replayed)
        for member in members_of(group):
            if member.group is None:
                continue
            history = member.replayed(("training_iteration", metric), resume_step=step)
            if not len(history):
                continue
            out[member.trial_id] = list(zip(history["training_iteration"], history[metric], strict=True))
            if bool(history.iloc[-1].get("done_training", False)):
                finished.add(member.trial_id)
    return out, frozenset(finished)
