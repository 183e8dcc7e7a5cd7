"""What any registry promotes: the candidate an experiment chose on validation, the gate's decision
against the version in service, the test figures reported after it, and the card that records all
three. The folder registry (promote) and MLflow's (mlflow_promote) differ only in where it goes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from caviar.experiment.layout import RESEED_FILE, TRAIN_CHECKPOINT, TRAIN_RESULT, reseed_dir
from caviar.experiment.object_store import is_uri, known_as, mirror_of
from caviar.experiment.record import Experiment
from caviar.experiment.reseed_record import ReseedRecord
from caviar.job.loading import validate
from caviar.job.schema import JobSpec
from caviar.registry.gate import GateResult, gate
from caviar.registry.store import now_iso, package_versions
from model.checkpoint import META, WEIGHTS, is_checkpoint
from model.data import Splits, load_splits
from model.errors import UserError, short
from model.evaluate import Metrics, evaluate_checkpoint
from model.files import file_sha256, read_json_object


@dataclass
class Candidate:
    job: JobSpec
    trial_id: str
    params: dict
    checkpoint: Path
    spread: ReseedRecord | None  # reseed.json, when the choice came from seed re-runs
    saved: dict = field(default_factory=dict)  # the checkpoint's caviar.json: its config and metrics

    @property
    def metrics(self) -> dict:
        return self.saved.get("metrics", {})

    def weights_sha256(self) -> str:
        return file_sha256(self.checkpoint / WEIGHTS)


def candidate_of(experiment_dir: Path) -> Candidate:
    """The experiment's choice (a `caviar train` run's one checkpoint), whole on this machine: on
    object storage that checkpoint alone is fetched. A checkpoint missing a file is one line."""
    experiment_dir = Path(experiment_dir)
    candidate = _train_run(experiment_dir) if (experiment_dir / TRAIN_RESULT).is_file() else _best_of(experiment_dir)
    if (mirror := mirror_of(candidate.checkpoint)) is not None:
        mirror.complete(candidate.checkpoint)
    if not is_checkpoint(candidate.checkpoint):  # a file removed by hand, or a copy cut short
        missing = [f for f in (WEIGHTS, META) if not (candidate.checkpoint / f).is_file()]
        raise UserError(
            f"{known_as(candidate.checkpoint)}: the best checkpoint has no {' or '.join(missing)}; nothing was promoted"
        )
    candidate.saved = read_json_object(candidate.checkpoint / META)
    return candidate


def decide(candidate: Candidate, current: Path | None, current_card: dict | None, force: bool) -> GateResult | None:
    """The gate against the version in service (a local folder); None where there is no gate split
    and --force promotes without one."""
    try:
        return gate(candidate.checkpoint, candidate.job, current, current_card)
    except UserError:
        if not force:
            raise
        return None


def reported_test(candidate: Candidate) -> tuple[Metrics, Splits]:
    """The test figures, read only after the decision and only to report: the seed re-runs' own
    when the choice came from them."""
    splits = load_splits(candidate.job.data)
    spread = candidate.spread
    test = Metrics(**spread.best_run.test_metrics) if spread else evaluate_checkpoint(candidate.checkpoint, splits.test)
    return test, splits


def _train_run(folder: Path) -> Candidate:
    """A `caviar train` run as a candidate: its one configuration and the checkpoint it kept."""
    result = read_json_object(folder / TRAIN_RESULT)
    checkpoint = folder / TRAIN_CHECKPOINT
    if not is_checkpoint(checkpoint):
        raise UserError(f"{folder}: the run kept no checkpoint; nothing to promote")
    job = validate(result.get("config"), str(folder / TRAIN_RESULT))
    return Candidate(job, "train", {}, checkpoint, None)


def _best_of(experiment_dir: Path) -> Candidate:
    """The best trial's best checkpoint, or with seed re-runs recorded, the best seed of the
    configuration whose mean validation score is best."""
    experiment = Experiment.load(experiment_dir)
    found = experiment.best()
    if found is None:
        raise UserError(f"{experiment.folder}: no trial reported {experiment.job.metric}; nothing to promote")
    trial, _ = found
    checkpoint, spread = experiment.best_checkpoint(trial), None
    if (record := reseed_dir(experiment_dir) / RESEED_FILE).is_file():
        spread, trial, checkpoint = _reseeded(record, experiment, experiment_dir)
    if checkpoint is None and trial.damage:
        raise UserError(
            f"{experiment.folder}: the best trial {trial.trial_id} has no readable checkpoint; {trial.damage[0]}"
        )
    if checkpoint is None:
        raise UserError(f"{experiment.folder}: the best trial {trial.trial_id} kept no checkpoint")
    return Candidate(experiment.job, trial.trial_id, trial.params, checkpoint, spread)


def _reseeded(record: Path, experiment: Experiment, experiment_dir: Path):
    """The seed re-runs' choice: the record, its source trial and the chosen seed's checkpoint, which
    must lie inside the experiment; a damaged or foreign record is one line."""
    fix = "run caviar reseed again, or remove it to promote the search's best trial"
    try:
        spread = ReseedRecord.from_json(read_json_object(record))
        chosen = next((c for c in spread.configs if c.rank == spread.chosen_rank), None)
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"{record}: damaged ({short(f'{type(err).__name__}: {err}', 80)}); {fix}") from None
    if chosen is None:
        raise UserError(f"{record}: damaged, chosen_rank {spread.chosen_rank} names no configuration it holds; {fix}")
    trial = next((t for t in experiment.trials() if t.trial_id == chosen.source_trial), None)
    if trial is None:
        raise UserError(f"{record}: names trial {short(str(chosen.source_trial), 40)}, not in this experiment; {fix}")
    checkpoint = _here(spread.best_run.checkpoint, experiment_dir)
    if not Path(checkpoint).resolve().is_relative_to(experiment_dir.resolve()):
        raise UserError(
            f"{record}: its best_run.checkpoint lies outside the experiment ({short(str(checkpoint), 60)}); {fix}"
        )
    return spread, trial, checkpoint


def _here(recorded: str, experiment_dir: Path) -> Path:
    """A checkpoint reseed.json names: a path, or on object storage a URI, read through the mirror."""
    mirror = mirror_of(experiment_dir) if is_uri(recorded) else None
    return mirror.local_of(recorded) if mirror else Path(recorded)


ROLES = {
    "val": "chose this checkpoint within its experiment, so it is optimistic",
    "gate": "decided the promotion against the version in service, on reviews neither trained on or chose by",
    "test": "reported only; it chose nothing",
}


def card_of(
    name: str,
    candidate: Candidate,
    experiment_dir: Path,
    test: Metrics,
    splits: Splits,
    previous: str | None,
    decision: GateResult | None,
    where: Callable[[Path], str] = known_as,
) -> dict:
    """The version's record: where it came from (`where` names a folder as the registry keeps it),
    what chose it, what the gate decided and what the test file reports."""
    saved, meta = candidate.saved, candidate.metrics
    return {
        "name": name,
        "job": candidate.job.name,
        "experiment": where(experiment_dir),
        "trial_id": candidate.trial_id,
        "hparams": candidate.params,
        "config": saved["config"],
        "val": {k: v for k, v in meta.items() if k.startswith("val_")} | {"step": meta.get("step")},
        "test": {
            "accuracy": test.accuracy,
            "f1": test.f1,
            "loss": test.loss,
            "confusion": test.confusion,
            "examples": len(splits.test),
        },
        "gate": None if decision is None else decision.as_card(),
        "roles": ROLES,
        "data_fingerprint": splits.fingerprint,
        "pretrained": _card_origin(saved.get("pretrained"), where),
        "packages": package_versions(),
        "created": now_iso(),
        "source_checkpoint": where(candidate.checkpoint),
        "previous": previous,
        **({"reseed": _card_spread(candidate.spread)} if candidate.spread else {}),
    }


def _card_origin(origin: dict | None, where: Callable[[Path], str]) -> dict | None:
    """The encoder fine-tuning started from: a local folder as the registry names folders, or a hub id."""
    if not origin:
        return None
    source = origin["source"]
    shown = where(Path(source)) if Path(source).is_absolute() else source
    return {"source": shown, "fingerprint": origin.get("fingerprint")}


def _card_spread(spread: ReseedRecord) -> dict:
    """Mean and spread of every re-run configuration; the chosen one first."""
    configs = sorted(spread.configs, key=lambda c: c.rank != spread.chosen_rank)
    return {
        "seeds": spread.seeds,
        "chosen_rank": spread.chosen_rank,
        "chosen_because": spread.chosen_because,
        "best_seed": spread.best_run.seed,
        "configs": [
            {
                "rank": c.rank,
                "source_trial": c.source_trial,
                "params": c.params,
                "val_mean": c.val_mean,
                "val_std": c.val_std,
                "test_mean": c.test_mean,
                "test_std": c.test_std,
                "seeds": [r.seed for r in c.runs],
            }
            for c in configs
        ],
    }
