"""`caviar promote`: the experiment's best checkpoint (chosen on validation) into the registry.

To run: caviar promote results/<experiment> [--name nsmc-sentiment] [--force]
        caviar promote results/train/<run>      (one `caviar train` run: its best checkpoint)

Promotion only reads: the experiment's ranking, or its seed re-runs (reseed/reseed.json, written by
`caviar reseed` or a job's final: {seeds: S}) when it has them. The candidate is scored on the NSMC
test file; if that is below the current version's score, promotion is refused unless --force.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from caviar.experiment.layout import RESEED_FILE, TRAIN_CHECKPOINT, TRAIN_RESULT, reseed_dir
from caviar.experiment.object_store import is_uri, known_as, mirror_of
from caviar.experiment.record import Experiment
from caviar.experiment.reseed_record import ReseedRecord
from caviar.job.loading import validate
from caviar.job.schema import JobSpec
from caviar.registry import store as registry
from caviar.registry.gate import GateResult, gate
from model.checkpoint import META, WEIGHTS, is_checkpoint
from model.data import load_splits
from model.errors import UserError, short
from model.evaluate import Metrics, evaluate_checkpoint
from model.files import check_room, out_of_space_is_one_line, read_json_object


@dataclass
class Promotion:
    name: str
    version: str
    path: str
    previous: str | None
    test_accuracy: float
    val_accuracy: float | None
    forced: bool
    reseed: dict | None  # the card's summary of the seed re-runs the choice came from
    already: bool = False  # the checkpoint was already this version: nothing new was made
    gate: GateResult | None = None  # what decided it; None if forced without one

    def as_json(self) -> dict:
        return asdict(self) | {"gate": None if self.gate is None else self.gate.as_card()}

    def describe(self) -> list[str]:
        if self.already:
            return [
                f"{self.name}/{self.version} already holds this checkpoint (the same weights); "
                f"no new version made, current is {self.previous or 'none'}"
            ]
        lines = [
            f"  config {c['rank']} ({c['source_trial']}): val {c['val_mean']:.4f} ± {c['val_std']:.4f}  "
            f"test {c['test_mean']:.4f} ± {c['test_std']:.4f}"
            for c in (self.reseed or {}).get("configs", [])
        ]
        because = (self.reseed or {}).get("chosen_because")
        return [
            *lines,
            *([f"  chosen: config {self.reseed['chosen_rank']}: {because}"] if because else []),
            f"promoted {self.name}/{self.version}: {self._decided()}; current was {self.previous or 'none'}",
        ]

    def _decided(self) -> str:
        gate, test = self.gate, f"test_accuracy {self.test_accuracy:.4f} (reported only)"
        if gate is None:
            return f"no gate split (forced); {test}"
        if gate.against is None and gate.candidate_accuracy is None:
            return f"the first version, no gate split; {test}"
        if gate.against is None:
            accuracy, reviews = gate.candidate_accuracy, gate.reviews
            return f"the first version, gate accuracy {accuracy:.4f} on {reviews:,} reviews; {test}"
        low, high = gate.interval
        forced = "" if gate.passed else ", below the gate but forced"
        other = f", {gate.against} trained on other data" if gate.same_data is False else ""
        return (
            f"gate {gate.gain * 100:+.2f} points [{low * 100:+.2f}, {high * 100:+.2f}] on "
            f"{gate.reviews:,} reviews against {gate.against}{other}{forced}; {test}"
        )


@dataclass
class _Candidate:
    job: JobSpec
    trial_id: str
    params: dict
    checkpoint: Path
    spread: ReseedRecord | None  # reseed.json, when the choice came from seed re-runs


def promote(experiment_dir: Path, name: str, force: bool = False, root: Path | None = None) -> Promotion:
    experiment_dir = Path(experiment_dir).resolve()
    root = Path(root or registry.registry_root())
    model_dir = registry.model_dir_of(name, root)  # checked before any work: the name must stay inside
    candidate = _train_run(experiment_dir) if (experiment_dir / TRAIN_RESULT).is_file() else _best_of(experiment_dir)
    if (mirror := mirror_of(candidate.checkpoint)) is not None:  # on object storage: this checkpoint alone
        mirror.complete(candidate.checkpoint)
    if not is_checkpoint(candidate.checkpoint):  # a file removed by hand, or a copy cut short
        missing = [f for f in (WEIGHTS, META) if not (candidate.checkpoint / f).is_file()]
        raise UserError(
            f"{known_as(candidate.checkpoint)}: the best checkpoint has no {' or '.join(missing)}; nothing was promoted"
        )
    weights = registry.sha256(candidate.checkpoint / WEIGHTS)
    if (held := registry.version_holding(model_dir, weights)) is not None:
        return _already(name, model_dir, held)
    saved = read_json_object(candidate.checkpoint / META)
    meta = saved.get("metrics", {})

    unchanged = "the registry is unchanged; promote again once there is room"
    check_room(root, sum(f.stat().st_size for f in registry.serving_files(candidate.checkpoint)) + 2**20, unchanged)
    with registry.locked(model_dir), out_of_space_is_one_line(model_dir, unchanged):
        if (held := registry.version_holding(model_dir, weights)) is not None:  # promoted meanwhile
            return _already(name, model_dir, held)
        previous = registry.current_version(model_dir)
        current = model_dir / previous if previous else None
        try:
            decision = gate(
                candidate.checkpoint, candidate.job, current, registry.read_card(current) if current else None
            )
        except UserError:
            if not force:
                raise
            decision = None  # no gate split, and --force: promoted without one
        if decision is not None and not decision.passed and not force:
            raise registry.Refused(decision.refusal())
        # the test file is read only now, after the decision, and only to report
        splits = load_splits(candidate.job.data)
        spread = candidate.spread
        test = (
            Metrics(**spread.best_run.test_metrics)
            if spread
            else evaluate_checkpoint(candidate.checkpoint, splits.test)
        )
        card = _card(name, candidate, experiment_dir, saved, meta, test, splits, previous, root, decision)
        version = registry.add_version(model_dir, candidate.checkpoint, card)
        registry.set_current(model_dir, version)
    return Promotion(
        name=name,
        version=version,
        path=str(model_dir / version),
        previous=previous,
        test_accuracy=test.accuracy,
        val_accuracy=meta.get("val_accuracy"),
        forced=bool(force and previous),
        reseed=card.get("reseed"),
        gate=decision,
    )


def _already(name: str, model_dir: Path, version: str) -> Promotion:
    """The version that holds the candidate's weights, told as a promotion that made nothing."""
    card = registry.read_card(model_dir / version)
    return Promotion(
        name=name,
        version=version,
        path=str(model_dir / version),
        previous=registry.current_version(model_dir),
        test_accuracy=card.get("test", {}).get("accuracy", float("nan")),
        val_accuracy=card.get("val", {}).get("val_accuracy"),
        forced=False,
        reseed=card.get("reseed"),
        already=True,
    )


def _train_run(folder: Path) -> _Candidate:
    """A `caviar train` run as a candidate: its one configuration and the checkpoint it kept."""
    result = read_json_object(folder / TRAIN_RESULT)
    checkpoint = folder / TRAIN_CHECKPOINT
    if not is_checkpoint(checkpoint):
        raise UserError(f"{folder}: the run kept no checkpoint; nothing to promote")
    job = validate(result.get("config"), str(folder / TRAIN_RESULT))
    return _Candidate(job, "train", {}, checkpoint, None)


def _best_of(experiment_dir: Path) -> _Candidate:
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
    return _Candidate(experiment.job, trial.trial_id, trial.params, checkpoint, spread)


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
    "gate": "decided the promotion against the version in service: unbiased for that choice",
    "test": "reported only; it chose nothing",
}


def _card(name, candidate: _Candidate, experiment_dir, saved, meta, test, splits, previous, root, decision) -> dict:
    return {
        "name": name,
        "job": candidate.job.name,
        "experiment": _where(experiment_dir, root),
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
        "pretrained": _card_origin(saved.get("pretrained"), root),
        "packages": registry.package_versions(),
        "created": registry.now_iso(),
        "source_checkpoint": _where(candidate.checkpoint, root),
        "previous": previous,
        **({"reseed": _card_spread(candidate.spread)} if candidate.spread else {}),
    }


def _where(path: Path, root: Path) -> str:
    """A source folder for the card: its URI on object storage, else relative to the registry."""
    return known_as(path) if mirror_of(path) else registry.relative_to_registry(path, root)


def _card_origin(origin: dict | None, root) -> dict | None:
    """The encoder fine-tuning started from: a local folder as a registry-relative path, or a hub id."""
    if not origin:
        return None
    source = origin["source"]
    shown = registry.relative_to_registry(source, root) if Path(source).is_absolute() else source
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
