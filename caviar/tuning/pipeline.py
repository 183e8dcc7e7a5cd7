"""`caviar tune` and `caviar resume`: a job's stages in one pass, from the job file to its results folder.

To run: caviar tune tune_jobs/quickstart.yaml            (local Ray on this machine)
        caviar tune tune_jobs/nsmc_asha.yaml --address auto   (an existing cluster)
        caviar resume results/<experiment>

The stages, in order:
  0. masked-LM pretraining, when the job's model.pretrained is {from_pretrain: true} (caviar/pretrain.py);
  1. the LR range test, when the job's train.lr comes from it (caviar/lr_find.py);
  2. the search: one Tuner, or coarse-to-fine rounds, each narrowed around the round before's
     best (caviar/rounds.py), every Tuner built by caviar/tuner.py;
  3. the outcome: caviar_tune.json and checkpoint pruning (caviar/outcome.py).
Seed re-runs, the last check before a model ships, run at `caviar promote` (caviar/reseed.py).
Calls only go down from here: no stage calls back into this module.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from caviar.experiment.layout import Storage, timestamped
from caviar.experiment.outcome import Interrupted, finish
from caviar.experiment.record import JOB_FILE, PRETRAIN_FILE, ROUNDS_FILE, Experiment, load_job_of
from caviar.job.schema import JobSpec
from caviar.tuning.ray_session import check_resources, leave_job_working_dir, start_ray
from caviar.tuning.rounds import describe_space, narrow_space, read_space
from caviar.tuning.tuner import build_tuner, restore_tuner
from model.errors import UserError
from model.files import write_json_atomically

log = logging.getLogger("caviar.tune")


def tune_job(job: JobSpec, address: str | None = None, experiment: str | None = None) -> dict:
    leave_job_working_dir(job)
    name = experiment or timestamped(job.name)
    storage = Storage.of(job.storage)
    if storage.is_remote and job.rounds > 1:
        raise UserError("rounds: coarse-to-fine rounds keep their lineage in a local (or shared) storage folder")
    folder = None if storage.is_remote else _new_experiment_folder(storage.local(name))
    if job.from_pretrain:
        job = pretrain_stage_of(job, folder)
    if job.lr_from_lr_find:
        job = lr_range_stage(job, folder or Path("results") / "lr_find" / name)
    if folder is not None:
        write_json_atomically(folder / JOB_FILE, job.model_dump(mode="json"))  # resume rebuilds this
    return _run(job, storage, name, address, restore=False)


def resume_experiment(experiment_dir: Path, address: str | None = None) -> dict:
    from ray import tune

    experiment_dir = Path(experiment_dir).resolve()
    job = load_job_of(experiment_dir)
    leave_job_working_dir(job)
    if job.rounds == 1 and not tune.Tuner.can_restore(str(experiment_dir)):
        raise UserError(f"{experiment_dir} cannot be resumed: Ray saved no experiment state there")
    return _run(job, Storage.of(str(experiment_dir.parent)), experiment_dir.name, address, restore=True)


def _new_experiment_folder(folder: Path) -> Path:
    if (folder / JOB_FILE).exists():
        raise UserError(f"{folder} already holds an experiment; pick another --name or caviar resume it")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{folder}: cannot create the experiment folder ({err.strerror})") from None
    return folder


def _run(job: JobSpec, storage: Storage, name: str, address: str | None, restore: bool) -> dict:
    """Start (or join) Ray, run the search, then read the outcome back from disk."""
    started = time.perf_counter()
    start_ray(address)
    check_resources(job)
    search_stage(job, storage, name, restore)
    if storage.is_remote:
        log.warning("remote storage: the outcome and checkpoint pruning need a local copy of %s", storage.uri(name))
        return {"experiment_dir": storage.uri(name), "wall_s": time.perf_counter() - started}
    return finish(job, storage.local(name), time.perf_counter() - started)


def pretrain_stage_of(job: JobSpec, folder: Path | None) -> JobSpec:
    """Stage 0: pretrain once (or find the folder a job with the same data, tokenizer, shape and
    settings made); the experiment records which folder its trials fine-tune."""
    from caviar.tuning.pretrain_stage import pretrain_stage

    job, record = pretrain_stage(job)
    if folder is not None:
        write_json_atomically(folder / PRETRAIN_FILE, record)
    return job


def lr_range_stage(job: JobSpec, folder: Path) -> JobSpec:
    """Run the LR range test in the driver, then search log-uniformly inside what it suggests."""
    from caviar.tuning.lr_find_stage import lr_find

    found = lr_find(job, folder, progress=True)
    log.info("train.lr from lr-find: loguniform [%.2e, %.2e]", found["base_lr"], found["max_lr"])
    return job.with_lr_range(found["base_lr"], found["max_lr"])


def search_stage(job: JobSpec, storage: Storage, name: str, restore: bool) -> None:
    if job.rounds > 1:
        rounds_stage(job, storage.local(name))
    elif restore:
        restore_tuner(job, storage.local(name)).fit()
    else:
        build_tuner(job, name, storage).fit()


def rounds_stage(job: JobSpec, experiment_dir: Path) -> None:
    """Run, or continue, every round in <experiment>/round-<r>; the lineage file records each round's
    space before it starts, so a resumed experiment searches exactly the same ranges."""
    lineage_file = experiment_dir / ROUNDS_FILE
    lineage = json.loads(lineage_file.read_text(encoding="utf-8")) if lineage_file.is_file() else []
    for r in range(1, job.rounds + 1):
        folder = experiment_dir / f"round-{r}"
        if r > len(lineage):
            space = job.search_space if r == 1 else _narrowed(job, lineage[-1], experiment_dir / f"round-{r - 1}")
            lineage.append({"round": r, "space": describe_space(space), "folder": folder.name})
            write_json_atomically(lineage_file, lineage)
            log.info("round %d/%d searches %s", r, job.rounds, lineage[-1]["space"])
        round_job = job.model_copy(update={"search_space": read_space(lineage[r - 1]["space"])})
        if _run_round(round_job, folder):
            raise Interrupted(experiment_dir)


def _narrowed(job: JobSpec, last: dict, last_folder: Path) -> dict:
    """The next round's space: the last one narrowed around its top-k trials' values."""
    top = [trial.params for trial, _ in Experiment.load(last_folder, job).ranked()[: job.refine.top_k]]
    return narrow_space(read_space(last["space"]), top, job.refine.margin)


def _run_round(round_job: JobSpec, folder: Path) -> bool:
    """Run one round, or continue it if it was cut short; True if it is still unfinished after."""
    from ray import tune

    if not (folder.is_dir() and tune.Tuner.can_restore(str(folder))):
        build_tuner(round_job, folder.name, Storage(str(folder.parent))).fit()
    elif Experiment.load(folder, round_job).interrupted:
        restore_tuner(round_job, folder).fit()
    else:
        return False  # finished before the driver stopped: nothing to read again
    return Experiment.load(folder, round_job).interrupted
