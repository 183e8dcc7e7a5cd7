"""One pipeline owns a job's stages and its data. `caviar train`, `tune`, `resume`, `lr-find`,
`pretrain` and `reseed` all run through it; nothing else composes stages.

To run: caviar tune tune_jobs/quickstart.yaml            (local Ray on this machine)
        caviar tune tune_jobs/nsmc_asha.yaml --address auto   (an existing cluster)
        caviar resume results/<experiment>

A job is resolved once (`resolve`): its data folder found and made absolute, the splits loaded and
fingerprinted, its storage made absolute. Every stage then takes those splits; none reads the files
again. The stages, in order:
  0. masked-LM pretraining, when the job asks for it (tuning/stages/pretrain_stage.py);
  1. the LR range test, when train.lr comes from it (tuning/stages/lr_find_stage.py), then the pilot that
     picks K for `fuse: auto` (tuning/members/fuse_pilot.py);
  2. the search: one Tuner, or coarse-to-fine rounds (tuning/stages/rounds.py), built by tuning/search/tuner.py;
  3. the outcome: caviar_tune.json and checkpoint pruning (experiment/outcome.py);
  4. seed re-runs of the top configurations, with final: {seeds: S} (tuning/stages/reseed.py).
The resolved job, with what stages 0 and 1 made, is caviar_job.json: `report`, `promote`, `resume`
and `reseed` then work from any shell, with no NSMC_DIR.
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

from caviar.experiment import layout
from caviar.experiment.job_record import load_job_of
from caviar.experiment.layout import FUSE_PILOT_FILE, JOB_FILE, PRETRAIN_FILE, Storage
from caviar.experiment.listing import record_driver
from caviar.experiment.mlflow_tracking import check_tracking, log_to_mlflow
from caviar.experiment.object_store import Mirror, is_uri, outage_is_one_line
from caviar.experiment.object_store import filesystem as filesystem_of
from caviar.experiment.outcome import Interrupted, TuneOutcome, finish, runnable, save
from caviar.experiment.record import Experiment, load_trials
from caviar.experiment.reseed_record import ReseedRecord
from caviar.job.schema import FinalSpec, JobSpec
from caviar.ops.disk_room import room_for_search, room_for_single
from caviar.ops.run_folder import run_folder
from caviar.tuning.ray_compat.connection import check_cluster
from caviar.tuning.ray_compat.working_dir import leave_job_working_dir
from caviar.tuning.search.ray_session import check_resources, check_storage_shared, start_ray
from caviar.tuning.stages.single_run import run_single
from model.data import Splits, load_splits, locate_nsmc
from model.errors import UserError
from model.files import check_room, out_of_space_is_one_line, write_json_atomically
from model.network import check_fits, pretrained_config

log = logging.getLogger("caviar.tune")


@dataclass
class Resolved:
    """A job with its data found (data.dir absolute, data.fingerprint recorded) and its splits, loaded once."""

    job: JobSpec
    splits: Splits


def resolve(job: JobSpec) -> Resolved:
    if job.model.pretrained:
        pretrained_config(job.model.pretrained)  # a wrong folder or hub id fails now, in one line
    check_fits(job.model)  # and a model that cannot fit, before any data is read
    folder = locate_nsmc(job.data).resolve()
    data = job.data.model_copy(update={"dir": str(folder)})
    splits = load_splits(data)
    storage = Storage.of(job.storage).root
    job = job.model_copy(
        update={
            "data": data.model_copy(update=splits.recorded()),
            "storage": storage,
        }
    )
    leave_job_working_dir()  # inside a Ray job; every path the job holds is absolute by now
    return Resolved(job, splits)


def before_search(resolved: Resolved, folder: Path, progress: bool = True) -> Resolved:
    """Stages 0 and 1, each when the job asks for it; the job after them names what they made."""
    job, splits = resolved.job, resolved.splits
    if job.stages.pretrain:
        # lazy: stage 0's modules (plots, TensorBoard) cost ~1.7 s; loaded for a job that pretrains
        from caviar.tuning.stages.pretrain_stage import pretrain_stage

        job, record = pretrain_stage(job, splits, progress)
        write_json_atomically(folder / PRETRAIN_FILE, record.as_json())
    if job.stages.lr_find:
        # lazy: ~0.4 s, loaded for the jobs and command that run it
        from caviar.tuning.stages.lr_find_stage import lr_find

        found = lr_find(job, folder, splits, progress)
        log.info("train.lr from lr-find: loguniform [%.2e, %.2e]", found.base_lr, found.max_lr)
        job = job.with_lr_range(found.base_lr, found.max_lr)
    return Resolved(job, splits)


def train_job(job: JobSpec, out: Path | None = None):
    """`caviar train`: the job's fixed values, no Ray; lr-find and stage 0 run first when asked for."""
    if job.search_space:
        log.info("search_space is not used: caviar train trains the job's fixed values")
        job = job.without_search()
    resolved = resolve(job)
    out = out or layout.train_run_dir(resolved.job.storage, job.name)
    with run_folder(out, need=room_for_single(resolved.job)):
        resolved = before_search(resolved, out)
        if "train.lr" in resolved.job.search_space:  # from lr-find: one run trains at its max_lr
            log.info("caviar train: train.lr %.2e, lr-find's max_lr", resolved.job.train.lr)
        return run_single(resolved.job.without_search(), out, resolved.splits)


def lr_find_job(job: JobSpec, out: Path | None = None):
    """`caviar lr-find`: the LR range test alone, into its own folder."""
    # lazy: ~0.4 s, loaded for the jobs and command that run it
    from caviar.tuning.stages.lr_find_stage import lr_find

    resolved = resolve(job)
    out = out or layout.lr_find_dir(resolved.job.storage, job.name)
    with run_folder(out, need=room_for_single(resolved.job)):
        return lr_find(resolved.job, out, resolved.splits)


def pretrain_job(job: JobSpec, out: Path | None = None):
    """`caviar pretrain`: stage 0 alone, into a folder `model.pretrained` then names; (folder, card)."""
    # lazy: ~1.7 s, loaded for this command only
    from caviar.tuning.stages.pretrain_stage import run_pretrain

    if job.model.pretrained:
        raise UserError("model.pretrained is set: caviar pretrain starts the job's from-scratch model; unset it")
    resolved = resolve(job)
    out = out or layout.pretrain_root(resolved.job.storage) / layout.timestamped(job.name)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} is not empty; pick another --out")
    with run_folder(out, need=room_for_single(resolved.job)):
        return out, run_pretrain(resolved.job, out, resolved.splits)


def tune_job(job: JobSpec, address: str | None = None, experiment: str | None = None) -> TuneOutcome | None:
    storage = Storage.of(job.storage)
    check_cluster(address)  # the cluster and the storage before any folder is made or any data read
    check_tracking(job)
    if storage.is_remote:
        storage.check_reachable()
    started = time.perf_counter()
    resolved = resolve(job)
    job = resolved.job
    name = experiment or layout.timestamped(job.name)
    notes = max_t_notes(job)
    if storage.is_remote:
        mirror = Mirror.of(storage.uri(name))
        if mirror.exists(JOB_FILE):
            raise UserError(f"{mirror.uri} already holds an experiment; pick another --name")
        mirror.start_afresh()
        with mirror.changes_pushed():  # stage 0's record and the LR range test's, on the store too
            resolved = before_search(resolved, mirror.folder)
        resolved, notes = _fuse_stage(resolved, address, None, notes)
        mirror.put_json(JOB_FILE, resolved.job.model_dump(mode="json"))  # before the first trial, as on a disk
        return _search(resolved, storage, name, address, restore=False, started=started, notes=notes)
    folder = storage.local(name)
    if (folder / JOB_FILE).exists():
        raise UserError(f"{folder} already holds an experiment; pick another --name or caviar resume it")
    with run_folder(
        folder,
        keep_if=lambda: any(folder.glob("experiment_state-*.json")),
        need=room_for_search(job),
        resume_hint=resume_line(folder),
    ):
        resolved = before_search(resolved, folder)
        resolved, notes = _fuse_stage(resolved, address, folder, notes)
        write_json_atomically(folder / JOB_FILE, resolved.job.model_dump(mode="json"))  # resume rebuilds this
        return _search(resolved, storage, name, address, restore=False, started=started, notes=notes)


def resume_experiment(location: str | Path, address: str | None = None) -> TuneOutcome | None:
    """A folder, or an experiment on object storage by its URI (read through a mirror here)."""
    from ray import tune

    mirror = Mirror.of(str(location)) if is_uri(location) else None
    experiment_dir = mirror.pull() if mirror else Path(location).resolve()
    job = load_job_of(experiment_dir)
    filesystem, path = filesystem_of(mirror.uri) if mirror else (None, str(experiment_dir))
    if job.rounds == 1 and not tune.Tuner.can_restore(path, storage_filesystem=filesystem):
        raise UserError(f"{experiment_dir} cannot be resumed: Ray saved no experiment state there")
    if job.rounds == 1:  # Ray's own files, read before the data is loaded and Ray started
        # lazy: Ray (~0.6 s) is loaded where it runs, never by `caviar train`
        from caviar.tuning.search.tuner import check_tuner_state

        check_tuner_state(experiment_dir)
        load_trials(experiment_dir)
    check_cluster(address)
    check_tracking(job)
    resolved = Resolved(job, load_splits(job.data))
    leave_job_working_dir()
    storage = Storage.of(mirror.uri.rsplit("/", 1)[0] if mirror else str(experiment_dir.parent))
    check_room(
        experiment_dir, 0 if mirror else room_for_search(job), f"free some and {runnable('caviar')} resume it again"
    )
    with out_of_space_is_one_line(experiment_dir, resume_line(experiment_dir)):
        return _search(resolved, storage, experiment_dir.name, address, restore=True, started=time.perf_counter())


def reseed_experiment(experiment_dir: Path, final: FinalSpec, address: str | None = None) -> ReseedRecord:
    """`caviar reseed`: the seed re-runs of a finished experiment, recorded in reseed/reseed.json."""
    # lazy: Ray (~0.6 s) is loaded where it runs, never by `caviar train`
    from caviar.tuning.stages.reseed import reseed

    experiment = Experiment.load(experiment_dir)
    if experiment.interrupted:
        raise Interrupted(experiment.folder)
    splits = load_splits(experiment.job.data)
    _start(address, experiment.job)
    return reseed(experiment, final, splits)


def _search(
    resolved: Resolved,
    storage: Storage,
    name: str,
    address: str | None,
    restore: bool,
    started: float,
    notes: list[str] | None = None,
) -> TuneOutcome | None:
    """Start (or join) Ray, run the search, read the outcome back from disk (or the store), then the
    seed re-runs."""
    # lazy: Ray (~0.6 s) is loaded where it runs, never by `caviar train`
    from caviar.tuning.search.tuner import build_tuner, fit, restore_tuner
    from caviar.tuning.stages.rounds import rounds_stage

    job, splits = resolved.job, resolved.splits
    _start(address, job)
    if not storage.is_remote:  # every node must see a local storage; and `caviar experiments` the driver
        check_storage_shared(storage.local(name))
        record_driver(storage.local(name))
    uri = storage.uri(name) if storage.is_remote else None
    with outage_is_one_line(uri, f"{runnable('caviar')} resume {uri}") if uri else contextlib.nullcontext():
        if job.rounds > 1:
            rounds_stage(job, _folder(storage, name), splits)
        elif restore:
            fit(restore_tuner(job, _folder(storage, name), splits))
        else:
            fit(build_tuner(job, name, storage, splits))
        experiment = Experiment.load(_folder(storage, name), job)  # read once: the outcome and the re-runs
    outcome = finish(experiment, time.perf_counter() - started, notes)
    if job.final.seeds:
        # lazy: Ray (~0.6 s) is loaded where it runs, never by `caviar train`
        from caviar.tuning.stages.reseed import reseed

        outcome.reseed = reseed(experiment, job.final, splits)
        save(outcome)
    log_to_mlflow(experiment, outcome)
    return outcome


def _folder(storage: Storage, name: str) -> Path:
    """The experiment's folder; on object storage its mirror, up to date, without the weights."""
    return Mirror.of(storage.uri(name)).pull() if storage.is_remote else storage.local(name)


def _start(address: str | None, job: JobSpec) -> None:
    start_ray(address)
    check_resources(job)


def _fuse_stage(resolved: Resolved, address: str | None, folder: Path | None, notes: list[str]):
    """`fuse: auto` becomes the K its pilot chose, before the job is saved: a resume keeps the groups."""
    if resolved.job.members_per_trial != "auto":
        return resolved, notes
    # lazy: Ray (~0.5 s) is loaded for a fused job only
    from caviar.tuning.members.fuse_pilot import fuse_chosen

    _start(address, resolved.job)
    job, line = fuse_chosen(resolved.job, resolved.splits, folder and folder / FUSE_PILOT_FILE)
    return Resolved(job, resolved.splits), [*notes, line]


def max_t_notes(job: JobSpec) -> list[str]:
    """A scheduler whose last rung comes before the job's own end cuts every trial short: say so."""
    max_t = getattr(job.scheduler, "max_t", None)
    if max_t is None or job.train.max_steps is not None or job.scheduler.time_attr != "training_iteration":
        return []
    evaluations = job.train.epochs * max(1, round(1 / job.train.eval_every))
    if evaluations <= max_t:
        return []
    note = (
        f"note: train.epochs={job.train.epochs} makes {evaluations} evaluations a trial, but scheduler.max_t is "
        f"{max_t}: every trial ends at evaluation {max_t} (raise scheduler.max_t to {evaluations} to train them all)"
    )
    log.warning(note.removeprefix("note: "))
    return [note]


def resume_line(folder: Path) -> str:
    return f"{runnable('caviar')} resume {shlex.quote(str(folder))} continues once there is room"
