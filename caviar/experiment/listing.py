"""`caviar experiments`: every experiment under a storage folder, one line each: what ran, whether it
is running, interrupted or finished, its trials and best metric, its age and size.

To run: caviar experiments [results] [--json]

A finished experiment is read from its caviar_tune.json alone (fast); an unfinished one from Ray's
state, for its trial count and best metric so far. Whether a driver still runs comes from the
record the driver writes at its start (caviar_driver.json: host and pid).
"""

from __future__ import annotations

import functools
import json
import math
import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from caviar.experiment.layout import DRIVER_FILE, JOB_FILE, OUTCOME_FILE
from caviar.experiment.object_store import filesystem, is_uri
from caviar.experiment.record import Experiment, folder_bytes
from model.errors import UserError, short
from model.files import process_alive, read_json_object, write_json_atomically


@dataclass
class ExperimentLine:
    name: str
    folder: str
    job: str
    state: str  # running, interrupted, finished, or damaged (with why in `note`)
    trials: int | None
    metric: str
    mode: str
    best: float | None  # the best trial's metric (so far, unless finished)
    best_interval: list[float] | None  # its 95% interval, once finished
    started: float  # seconds since the epoch
    size_bytes: int
    note: str | None = None

    def as_json(self) -> dict:
        return asdict(self)

    def cells(self, now: float) -> list[str]:
        best = "" if self.best is None else f"{self.best:.4f}"
        if self.best_interval:
            best += " [{:.4f}, {:.4f}]".format(*self.best_interval)
        elif self.best is not None and self.state != "finished":
            best += " so far"
        trials = "" if self.trials is None else str(self.trials)
        state = self.state + (f" ({self.note})" if self.note else "")
        return [
            self.name,
            self.job,
            state,
            trials,
            f"{self.metric} {best}".strip(),
            age(now - self.started),
            size(self.size_bytes),
        ]


def record_driver(folder: Path) -> None:
    """Written by the driver as its search starts: `caviar experiments` tells running from interrupted."""
    write_json_atomically(
        Path(folder) / DRIVER_FILE, {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
    )


def list_experiments(storage: str | Path) -> list[ExperimentLine]:
    if is_uri(storage):
        return list_on_store(str(storage))
    storage = Path(storage).expanduser()
    if not storage.is_dir():
        raise UserError(f"{storage}: no such folder")
    found = [p.parent for p in storage.glob(f"*/{JOB_FILE}")]
    lines = [read_line(folder) for folder in found]
    return sorted(lines, key=lambda line: line.started)  # newest last, nearest the prompt


def read_line(folder: Path) -> ExperimentLine:
    line = _line(folder.name, str(folder.resolve()), (folder / JOB_FILE).stat().st_mtime, folder_bytes(folder))
    if not _with_job(line, lambda: read_json_object(folder / JOB_FILE)):
        return line
    if (folder / OUTCOME_FILE).is_file():
        return _finished(line, lambda: read_json_object(folder / OUTCOME_FILE))
    line.state = "running" if driver_alive(folder) else "interrupted"
    try:
        experiment = Experiment.load(folder)
    except UserError as err:
        line.note = "no trial has started" if "no Ray Tune experiment state" in str(err) else str(err)[:80]
        return line
    line.trials = len(experiment.trials())
    if best := experiment.best():
        line.best = float(best[1][line.metric])
    return line


def list_on_store(uri: str) -> list[ExperimentLine]:
    """The experiments under a URI, each from its two records alone (nothing is mirrored)."""
    import pyarrow.fs as pafs

    fs, root = filesystem(uri)
    try:
        listed = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    except OSError as err:
        raise UserError(f"{uri}: cannot list it ({short(str(err).strip().splitlines()[0], 120)})") from None
    folders: dict[str, dict] = {}
    for info in (i for i in listed if i.type == pafs.FileType.File):
        name, _, rest = info.path[len(root) + 1 :].partition("/")
        folders.setdefault(name, {})[rest] = info
    lines = []
    for name, files in folders.items():
        if JOB_FILE not in files:
            continue
        read = functools.partial(_read_json, fs, f"{root}/{name}")
        line = _line(
            name, f"{uri.rstrip('/')}/{name}", files[JOB_FILE].mtime.timestamp(), sum(i.size for i in files.values())
        )
        if _with_job(line, functools.partial(read, JOB_FILE)):
            if OUTCOME_FILE in files:
                _finished(line, functools.partial(read, OUTCOME_FILE))
            else:  # a driver elsewhere cannot be asked whether it still runs
                line.state = "running or interrupted"
                line.trials = sum(1 for rel in files if rel.count("/") == 1 and rel.endswith("/params.json"))
        lines.append(line)
    return sorted(lines, key=lambda line: line.started)


def _read_json(fs, folder: str, record: str) -> dict:
    with fs.open_input_stream(f"{folder}/{record}") as stream:
        return json.loads(stream.read())


def _line(name: str, folder: str, started: float, size_bytes: int) -> ExperimentLine:
    return ExperimentLine(name, folder, "?", "damaged", None, "val_accuracy", "max", None, None, started, size_bytes)


def _with_job(line: ExperimentLine, read) -> bool:
    """The job's name, metric and mode on the line; False (and why, on the line) for a damaged record."""
    try:
        job = read()
    except (UserError, ValueError, OSError) as err:
        line.note = short(str(err), 80)
        return False
    line.job, line.metric, line.mode = (
        str(job.get("name", "?")),
        str(job.get("metric", line.metric)),
        str(job.get("mode", "max")),
    )
    return True


def _finished(line: ExperimentLine, read) -> ExperimentLine:
    line.state = "finished"
    try:
        outcome = read()
    except (UserError, ValueError, OSError) as err:
        line.state, line.note = "damaged", short(str(err), 80)
        return line
    line.trials = len(outcome.get("trials") or [])
    best = outcome.get(f"best_{line.metric}")
    line.best = float(best) if isinstance(best, int | float) and math.isfinite(best) else None
    interval = outcome.get("best_interval")
    line.best_interval = interval if isinstance(interval, list) and len(interval) == 2 else None
    return line


def driver_alive(folder: Path) -> bool:
    """The driver that recorded itself still runs (on this host: another host's cannot be asked)."""
    try:
        record = read_json_object(folder / DRIVER_FILE)
    except UserError:
        return False
    pid = record.get("pid")
    return record.get("host") == socket.gethostname() and isinstance(pid, int) and process_alive(pid)


def table(lines: list[ExperimentLine], storage: str) -> str:
    now = time.time()
    head = ["name", "job", "state", "trials", "best", "age", "size"]
    rows = [head, *(line.cells(now) for line in lines)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    counted = f"{len(lines)} experiment{'' if len(lines) == 1 else 's'}"
    text = [f"{counted} in {storage} (newest last):"]
    text += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(text)


def age(seconds: float) -> str:
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length:
            return f"{seconds / length:.0f}{unit} ago"
    return "just now"


def size(n: int) -> str:
    for unit, length in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= length:
            return f"{n / length:.1f} {unit}"
    return f"{n} B"
