"""The resolved job an experiment recorded (caviar_job.json), read back: `report`, `promote`, `resume`
and `reseed` read the same data as the run did, from any shell and without NSMC_DIR."""

from __future__ import annotations

from pathlib import Path

from caviar.experiment.layout import JOB_FILE
from caviar.job.loading import validate
from caviar.job.schema import JobSpec
from model.data import has_nsmc
from model.errors import UserError
from model.files import read_json_object
from model.settings import settings


def load_job_of(experiment_dir: Path) -> JobSpec:
    """The resolved job an experiment recorded: its data folder absolute, its fingerprint checked when
    the splits are read again. A job whose data has moved says where to point NSMC_DIR."""
    path = Path(experiment_dir) / JOB_FILE
    if not Path(experiment_dir).is_dir():
        raise UserError(f"{experiment_dir}: no such folder")
    if not path.is_file():
        raise UserError(f"{experiment_dir} is not a caviar experiment (no {JOB_FILE})")
    raw = read_json_object(path)
    # saved by caviar before 0.2, where the lr-find shorthand was a job key; it is always false once
    # saved (the range test has run by then), so older experiments still report, promote and resume
    raw.pop("lr_from_lr_find", None)
    job = validate(raw, str(path))
    return relocated(job, path)


def relocated(job: JobSpec, source: Path) -> JobSpec:
    """The recorded data folder, or NSMC_DIR where the recorded one no longer holds the files (the
    fingerprint then tells whether it is the same data)."""
    recorded = job.data.dir
    if recorded is None or has_nsmc(Path(recorded)):
        return job
    moved = settings().nsmc_dir
    if moved and has_nsmc(Path(moved)):
        return job.model_copy(update={"data": job.data.model_copy(update={"dir": str(Path(moved).resolve())})})
    raise UserError(
        f"{source}: the data this experiment recorded ({recorded}) is gone; "
        "set NSMC_DIR to the folder it moved to (its fingerprint is checked)"
    )
