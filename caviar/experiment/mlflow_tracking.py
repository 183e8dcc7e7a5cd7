"""Every experiment in MLflow as well: one parent run per experiment, one child run per trial, per
fused member and per stage before the search (issue 51, item 1).

TensorBoard stays the live view; MLflow is where a team already compares runs. The driver logs,
from the experiment's own records, once the search has ended (and again after `caviar resume`),
never the trials: many workers writing one SQLite file lock it. What is logged is kept in the
experiment's caviar_mlflow.json (the run ids, and the last evaluation each run holds), so a resumed
experiment continues the same runs and no evaluation is logged twice. MLflow is an optional extra
(`pip install 'caviar[mlflow]'`); its telemetry stays off unless the user turned it on.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from caviar.experiment.layout import LR_FIND_JSON, MLFLOW_FILE, PRETRAIN_FILE, RESEED_DIR, RESEED_FILE
from caviar.experiment.object_store import known_as, mirror_of
from caviar.experiment.outcome import TuneOutcome
from caviar.experiment.record import Experiment, TrialRecord
from caviar.experiment.rows import TrialRow
from caviar.job.keys import flatten
from caviar.job.schema import JobSpec
from model.errors import UserError, short
from model.files import read_json_object, write_json_atomically

log = logging.getLogger("caviar.tune")
# Ray's bookkeeping columns and caviar's flags: not metrics (training_iteration is the step)
NOT_METRICS = frozenset(
    {"training_iteration", "timestamp", "pid", "iterations_since_restore", "time_since_restore", "time_this_iter_s"}
)
QUIET = ("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
PARAM_CHARS = 500  # MLflow caps a parameter's value (6,000 characters); a job's long values are cut here


def tracking_uri(job: JobSpec) -> str | None:
    """The job's `tracking.mlflow`, else MLFLOW_TRACKING_URI; None: no tracking."""
    return job.tracking.mlflow or os.environ.get("MLFLOW_TRACKING_URI") or None


def client_for(uri: str):
    """An MlflowClient for `uri`, checked: a missing extra or a server that does not answer is one line."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # off unless the user turned it on
    for quiet in QUIET:  # stdout is caviar's (a --json line); MLflow's links and progress bars stay off it
        os.environ.setdefault(quiet, "false" if quiet.startswith("MLFLOW_ENABLE") else "true")
    try:
        from mlflow.tracking import MlflowClient  # lazy: MLflow is an optional extra (~1 s to import)
    except ImportError:
        raise UserError(f"tracking to {uri} needs MLflow: pip install 'caviar[mlflow]'") from None
    if uri.startswith(("http://", "https://")):
        try:
            httpx.get(f"{uri.rstrip('/')}/health", timeout=5).raise_for_status()
        except httpx.HTTPError as err:
            raise UserError(
                f"MLflow at {uri} did not answer ({short(str(err), 120)}); start it or fix the URI"
            ) from None
    return MlflowClient(tracking_uri=uri)


def check_tracking(job: JobSpec) -> None:
    """Before a run starts: the extra is installed and the server answers, or one line says not."""
    if (uri := tracking_uri(job)) is not None:
        client_for(uri)


def log_to_mlflow(experiment: Experiment, outcome: TuneOutcome) -> Tracked | None:
    """After a run: the experiment logged where its job says; a server gone since the start is a
    warning (the experiment itself is whole), and the next resume or logging continues it."""
    if (uri := tracking_uri(experiment.job)) is None:
        return None
    try:
        tracked = track(experiment, outcome, uri)
    except Exception as err:  # noqa: BLE001 - MLflow's own errors vary by store; none may cost the outcome
        log.warning("MLflow: %s was not logged to %s (%s)", experiment.folder.name, uri, short(str(err), 200))
        return None
    log.info(tracked.describe())
    return tracked


@dataclass
class Tracked:
    """What one logging pass did: where, the parent run, and how many runs and evaluations it added."""

    uri: str
    experiment_id: str
    parent_run_id: str
    runs: int
    evaluations: int

    def describe(self) -> str:
        return (
            f"MLflow: {self.runs} runs, {self.evaluations} new evaluations logged to {self.uri} "
            f"(experiment {self.experiment_id}, parent run {self.parent_run_id})"
        )


def track(experiment: Experiment, outcome: TuneOutcome, uri: str) -> Tracked:
    """Log (or continue logging) the experiment to MLflow at `uri`."""
    client, job, folder = client_for(uri), experiment.job, experiment.folder
    ledger = read_json_object(folder / MLFLOW_FILE) if (folder / MLFLOW_FILE).is_file() else {}
    if ledger.get("uri") not in (None, uri):
        ledger = {}  # logged to another server before: these runs start there afresh
    experiment_id = ledger.get("experiment_id") or experiment_id_for(client, job.name, uri)
    parent = ledger.get("parent") or client.create_run(experiment_id, run_name=folder.name).info.run_id
    runs = ledger.setdefault("runs", {})
    _log_parent(client, parent, job, outcome, known_as(folder))
    rows = {row.trial_id: row for row in outcome.trials}
    added = 0
    for trial in experiment.trials():
        entry = runs.get(trial.trial_id) or {"run_id": _child(client, experiment_id, parent, trial.trial_id)}
        runs[trial.trial_id] = entry
        added += _log_trial(client, entry, trial, rows.get(trial.trial_id))
    for name, figures in _stage_records(folder).items():
        entry = runs.get(name) or {"run_id": _child(client, experiment_id, parent, name)}
        runs[name] = entry
        logged = set(client.get_run(entry["run_id"]).data.params)
        params = {k: v for k, v in _params(figures).items() if k not in logged}
        _log(client, entry["run_id"], [], params, {"caviar.stage": name})
        client.set_terminated(entry["run_id"], "FINISHED")
    client.set_terminated(parent, "FINISHED")
    ledger |= {"uri": uri, "experiment_id": experiment_id, "parent": parent}
    mirror = mirror_of(folder)
    with mirror.changes_pushed(folder) if mirror else contextlib.nullcontext():  # on object storage, the store too
        write_json_atomically(folder / MLFLOW_FILE, ledger)
    return Tracked(uri, experiment_id, parent, len(runs), added)


def experiment_id_for(client, name: str, uri: str) -> str:
    """The MLflow experiment named after the job, made if new. On a SQLite store its artifacts go
    beside the database (mlartifacts/, as `mlflow server` names it), not into the working folder."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    beside = None
    if uri.startswith("sqlite:///"):
        beside = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()
    return client.create_experiment(name, artifact_location=beside)


def _child(client, experiment_id: str, parent: str, name: str) -> str:
    run = client.create_run(experiment_id, run_name=name, tags={"mlflow.parentRunId": parent})
    return run.info.run_id


def _log_parent(client, run_id: str, job: JobSpec, outcome: TuneOutcome, where: str) -> None:
    """The resolved job as parameters, the outcome as a metric and tags, and both as JSON artifacts."""
    logged = set(client.get_run(run_id).data.params)  # a resume: MLflow refuses a parameter logged again
    params = {k: v for k, v in _params(job.model_dump(mode="json")).items() if k not in logged}
    tags = {
        "caviar.experiment": where,
        "caviar.best_trial": outcome.best_trial,
        "caviar.best_checkpoint": outcome.best_checkpoint,
        "caviar.best_interval": outcome.best_interval,
    }
    _log(client, run_id, [(f"best_{outcome.metric}", outcome.best_metric, _now_ms(), 0)], params, tags)
    client.log_dict(run_id, job.model_dump(mode="json"), "caviar_job.json")
    client.log_dict(run_id, outcome.as_json(), "caviar_tune.json")


def _log(client, run_id: str, metrics: list[tuple], params: dict, tags: dict) -> None:
    """One run's metrics (key, value, ms, step), parameters and tags, in batches MLflow takes
    (at most 1,000 metrics, 100 parameters and 100 tags a call)."""
    from mlflow.entities import Metric, Param, RunTag  # lazy: the optional extra, imported once it is needed

    metrics = [Metric(*m) for m in metrics]
    params = [Param(k, v) for k, v in params.items()]
    tags = [RunTag(k, v) for k, v in _strings(tags).items()]
    while metrics or params or tags:
        client.log_batch(run_id, metrics=metrics[:1000], params=params[:100], tags=tags[:100])
        metrics, params, tags = metrics[1000:], params[100:], tags[100:]


def _log_trial(client, entry: dict, trial: TrialRecord, row: TrialRow | None) -> int:
    """The trial's values once, its evaluations past the last one logged, and its state as tags;
    returns how many evaluations it added."""
    run_id, done = entry["run_id"], int(entry.get("step", 0))
    params = {} if entry.get("params") else {k: _text(v) for k, v in trial.params.items()}
    metrics, added = [], 0
    for record in trial.history.to_dict("records") if len(trial.history) else []:
        step = int(record.get("training_iteration") or 0)
        if step <= done:
            continue
        stamp = int(1000 * record["timestamp"]) if _number(record.get("timestamp")) else _now_ms()
        metrics += [(k, float(v), stamp, step) for k, v in record.items() if k not in NOT_METRICS and _number(v)]
        entry["step"], added = step, added + 1
    tags = {"caviar.trial_id": trial.trial_id, "caviar.group": trial.group}
    if row is not None:
        tags |= {
            "caviar.state": row.status,
            "caviar.stopped_early": row.stopped_early,
            "caviar.stopped_by": row.stopped_by,
            "caviar.errored": row.status == "errored",
            "caviar.checkpoint": row.checkpoint,
            "caviar.cost_s": row.wall_s,
            f"caviar.best_{row.metric}": row.best_metric,
            f"caviar.best_{row.metric}_interval": None if row.metric_low is None else [row.metric_low, row.metric_high],
        }
    _log(client, run_id, metrics, params, tags)
    entry["params"] = True
    if row is not None:
        client.set_terminated(run_id, "FAILED" if row.status == "errored" else "FINISHED")
    return added


def _stage_records(folder: Path) -> dict[str, dict]:
    """The records of the stages before (and after) the search that this experiment ran."""
    found = {"stage.pretrain": folder / PRETRAIN_FILE, "stage.lr_find": folder / LR_FIND_JSON}
    found["stage.reseed"] = folder / RESEED_DIR / RESEED_FILE
    return {name: read_json_object(path) for name, path in found.items() if path.is_file()}


def _params(raw: dict) -> dict[str, str]:
    return {k: _text(v) for k, v in flatten(raw).items() if not isinstance(v, list | dict) or len(str(v)) < PARAM_CHARS}


def _strings(values: dict) -> dict[str, str]:
    return {k: _text(v) for k, v in values.items() if v is not None}


def _text(value) -> str:
    return str(value)[:PARAM_CHARS]


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _now_ms() -> int:
    return int(time.time() * 1000)
