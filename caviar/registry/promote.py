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

from caviar.experiment.object_store import known_as, mirror_of
from caviar.registry import store as registry
from caviar.registry.candidate import candidate_of, card_of, decide, reported_test
from caviar.registry.gate import GateResult
from model.files import check_room, out_of_space_is_one_line


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
        forced = "" if gate.passed else ", below the gate but forced"
        other = f", {gate.against} trained on other data" if gate.same_data is False else ""
        return f"gate {gate.gain_text()}{other}{forced}; {test}"


def promote(experiment_dir: Path, name: str, force: bool = False, root: Path | None = None) -> Promotion:
    experiment_dir = Path(experiment_dir).resolve()
    root = Path(root or registry.registry_root())
    model_dir = registry.model_dir_of(name, root)  # checked before any work: the name must stay inside
    candidate = candidate_of(experiment_dir)
    weights = candidate.weights_sha256()
    if (held := registry.version_holding(model_dir, weights)) is not None:
        return _already(name, model_dir, held)

    unchanged = "the registry is unchanged; promote again once there is room"
    check_room(root, sum(f.stat().st_size for f in registry.serving_files(candidate.checkpoint)) + 2**20, unchanged)
    with registry.locked(model_dir), out_of_space_is_one_line(model_dir, unchanged):
        if (held := registry.version_holding(model_dir, weights)) is not None:  # promoted meanwhile
            return _already(name, model_dir, held)
        previous = registry.current_version(model_dir)
        current = model_dir / previous if previous else None
        decision = decide(candidate, current, registry.read_card(current) if current else None, force)
        if decision is not None and not decision.passed and not force:
            raise registry.Refused(decision.refusal())
        test, splits = reported_test(candidate)
        card = card_of(name, candidate, experiment_dir, test, splits, previous, decision, where=_where(root))
        version = registry.add_version(model_dir, candidate.checkpoint, card)
        registry.set_current(model_dir, version)
    return Promotion(
        name=name,
        version=version,
        path=str(model_dir / version),
        previous=previous,
        test_accuracy=test.accuracy,
        val_accuracy=candidate.metrics.get("val_accuracy"),
        forced=bool(force and previous),
        reseed=card.get("reseed"),
        gate=decision,
    )


def _where(root: Path):
    """How a folder registry names a source folder: its URI on object storage, else relative to the
    registry (never this machine's absolute path)."""
    return lambda path: known_as(path) if mirror_of(path) else registry.relative_to_registry(path, root)


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
