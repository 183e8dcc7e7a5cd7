"""Coarse-to-fine rounds: each round searches a space narrowed around the previous round's top-k.

Numeric ranges shrink to the span of the top-k values plus a margin on each side (in log space for
log-distributed parameters), clipped to the round before; a categorical keeps only the values the
top-k used. Ray Tune cannot change a restored experiment's search space, so each round is its own
Tuner run in <experiment>/round-<r>/, all under one folder, one leaderboard and one TensorBoard.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from caviar.experiment.layout import ROUNDS_FILE, Storage, round_dir
from caviar.experiment.object_store import Mirror, filesystem, mirror_of, write_record
from caviar.experiment.outcome import Interrupted
from caviar.experiment.record import Experiment
from caviar.experiment.round_record import RoundRecord, rounds_of
from caviar.job.distributions import Distribution
from caviar.job.schema import JobSpec
from caviar.tuning.search.tuner import build_tuner, fit, restore_tuner
from model.data import Splits
from model.files import read_json

log = logging.getLogger("caviar.tune")

MIN_SHARE = 0.1  # a numeric range never narrows below 10% of its previous width


def narrow(dist: Distribution, values: list, margin: float) -> Distribution:
    """The distribution for the next round, given the values the top-k trials used."""
    kind, args = dist.kind, dist.args
    if kind in ("choice", "grid"):
        kept = [v for v in args if v in values]
        return Distribution(**{kind: kept or list(args)})
    log = kind == "loguniform"
    to, back = (math.log, math.exp) if log else (float, float)
    low, high = to(args[0]), to(args[1])
    vals = [to(v) for v in values]
    lo, hi = min(vals), max(vals)
    width = max(hi - lo, MIN_SHARE * (high - low))
    center = (lo + hi) / 2
    lo, hi = min(lo, center - width / 2), max(hi, center + width / 2)
    lo, hi = max(low, lo - margin * width), min(high, hi + margin * width)
    if kind == "randint":
        lo_i, hi_i = max(args[0], math.floor(lo)), min(args[1], math.ceil(hi))
        if lo_i >= hi_i:
            return Distribution(choice=[lo_i])
        return Distribution(randint=(lo_i, hi_i))
    new = (max(args[0], back(lo)), min(args[1], back(hi)))  # exp(log(x)) can overshoot x by an ulp
    if kind == "quniform":
        return Distribution(quniform=(*new, args[2]))
    return Distribution(**{kind: new})


def narrow_space(space: dict[str, Distribution], top_params: list[dict], margin: float) -> dict[str, Distribution]:
    return {key: narrow(dist, [p[key] for p in top_params if key in p], margin) for key, dist in space.items()}


def describe_space(space: dict[str, Distribution]) -> dict:
    return {key: {dist.kind: list(dist.args)} for key, dist in space.items()}


def read_space(described: dict) -> dict[str, Distribution]:
    return {key: Distribution(**value) for key, value in described.items()}


def rounds_stage(job: JobSpec, experiment_dir: Path, splits: Splits) -> None:
    """Run, or continue, every round in <experiment>/round-<r>; the lineage file records each round's
    space before it starts, so a resumed experiment searches exactly the same ranges."""
    lineage_file = experiment_dir / ROUNDS_FILE
    lineage = rounds_of(read_json(lineage_file)) if lineage_file.is_file() else []
    mirror = mirror_of(experiment_dir)  # on object storage: the rounds and the lineage go to the store
    last: Experiment | None = None
    for r in range(1, job.rounds + 1):
        folder = round_dir(experiment_dir, r)
        if r > len(lineage):
            if r == 1:
                space = job.search_space
            else:
                last = last or Experiment.load(round_dir(experiment_dir, r - 1), job)
                top = [trial.params for trial, _ in last.ranked()[: job.refine.top_k]]
                space = narrow_space(read_space(lineage[-1].space), top, job.refine.margin)
            lineage.append(RoundRecord(r, describe_space(space), folder.name))
            write_record(lineage_file, [record.as_json() for record in lineage])
            log.info("round %d/%d searches %s", r, job.rounds, lineage[-1].space)
        round_job = job.model_copy(update={"search_space": read_space(lineage[r - 1].space)})
        last = _run_round(round_job, folder, splits, mirror)
        if last is not None and last.interrupted:
            raise Interrupted(experiment_dir)


def _run_round(round_job: JobSpec, folder: Path, splits: Splits, mirror: Mirror | None) -> Experiment | None:
    """Run one round, or continue it if it was cut short; the round as it stands after (None for a
    round that had finished before the driver stopped: nothing to read again until it is needed)."""
    from ray import tune

    fs, path = filesystem(mirror.uri_of(folder)) if mirror else (None, str(folder))
    if not ((mirror or folder.is_dir()) and tune.Tuner.can_restore(path, storage_filesystem=fs)):
        storage = Storage(mirror.uri if mirror else str(folder.parent))
        fit(build_tuner(round_job, folder.name, storage, splits))
    elif Experiment.load(folder, round_job).interrupted:
        fit(restore_tuner(round_job, folder, splits))
    else:
        return None
    if mirror is not None:
        mirror.pull()
    return Experiment.load(folder, round_job)
