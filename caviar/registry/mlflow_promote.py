"""`caviar promote`, `registry rollback` and `registry list` on MLflow's model registry.

To run: CAVIAR_REGISTRY=mlflow:http://127.0.0.1:5000 caviar promote results/<experiment>

The candidate, the gate and the card are the folder registry's (candidate.py); the gate scores the
candidate against the version `@champion` names. A passing candidate (or --force) becomes
`@champion`; a refused one is still registered, as `@challenger`, with the refusal in its tags.
"""

from __future__ import annotations

import time
from pathlib import Path

from caviar.experiment.layout import MLFLOW_FILE
from caviar.experiment.mlflow_tracking import client_for
from caviar.registry.candidate import candidate_of, card_of, decide, reported_test
from caviar.registry.gate import GateResult
from caviar.registry.mlflow_registry import (
    CHALLENGER,
    CHAMPION,
    MlflowRegistry,
    version_number,
)
from caviar.registry.promote import Promotion
from caviar.registry.store import Refused, read_card
from model.errors import UserError
from model.files import read_json_object

TAG = "caviar."
REFUSED = TAG + "refused"  # on a version the gate refused: why


def promote_to_mlflow(experiment_dir: Path, name: str, uri: str, force: bool = False) -> Promotion:
    experiment_dir = Path(experiment_dir).resolve()
    registry = MlflowRegistry(uri, name)
    candidate = candidate_of(experiment_dir)
    weights = candidate.weights_sha256()
    with registry.locked():
        if (held := registry.holding(weights)) is not None:
            return _already(registry, held)
        previous = registry.alias(CHAMPION)
        current = registry.fetch(previous) if previous else None
        decision = decide(candidate, current, read_card(current) if current else None, force)
        refused = decision is not None and not decision.passed and not force
        test, splits = reported_test(candidate)  # after the decision, and only to report
        card = card_of(name, candidate, experiment_dir, test, splits, current and current.name, decision)
        tags = _tags(card, decision, refused, forced=force)
        run = _tracked_run(experiment_dir, candidate.trial_id, uri)
        version = registry.register(candidate.checkpoint, card, run, tags)
        if refused:
            registry.set_alias(CHALLENGER, version)
            raise Refused(f"{decision.refusal()}; registered as {registry.label(version)}@{CHALLENGER}")
        if (moved := registry.alias(CHAMPION)) != previous:  # a promotion from another machine won the race
            registry.set_alias(CHALLENGER, version)
            raise UserError(
                f"{registry.label(moved)} became @{CHAMPION} while the gate compared with v{previous}; "
                f"{registry.label(version)} is @{CHALLENGER}: promote again to gate it against the new champion"
            )
        registry.set_alias(CHAMPION, version)
    return Promotion(
        name=name,
        version=f"v{version}",
        path=f"models:/{name}/{version}",
        previous=None if previous is None else f"v{previous}",
        test_accuracy=test.accuracy,
        val_accuracy=candidate.metrics.get("val_accuracy"),
        forced=bool(force and previous),
        reseed=card.get("reseed"),
        gate=decision,
    )


def _already(registry: MlflowRegistry, number: int) -> Promotion:
    """The version that holds the candidate's weights, told as a promotion that made nothing."""
    tags, champion = registry.version(number).tags, registry.alias(CHAMPION)
    return Promotion(
        name=registry.name,
        version=f"v{number}",
        path=f"models:/{registry.name}/{number}",
        previous=None if champion is None else f"v{champion}",
        test_accuracy=_number(tags.get(TAG + "test_accuracy")) or float("nan"),
        val_accuracy=_number(tags.get(TAG + "val_accuracy")),
        forced=False,
        reseed=None,
        already=True,
    )


def _tracked_run(experiment_dir: Path, trial_id: str, uri: str) -> str | None:
    """The trial's run when the experiment was tracked to this server: the version links to it."""
    ledger_file = experiment_dir / MLFLOW_FILE
    if not ledger_file.is_file():
        return None
    ledger = read_json_object(ledger_file)
    if ledger.get("uri") != uri:
        return None
    entry = ledger.get("runs", {}).get(trial_id)
    return entry.get("run_id") if isinstance(entry, dict) else None


def _tags(card: dict, decision: GateResult | None, refused: bool, forced: bool) -> dict[str, str]:
    """The card as the version's tags: what MLflow's UI and search show without a download."""
    test, val = card.get("test") or {}, card.get("val") or {}
    tags = {
        "job": card.get("job"),
        "trial_id": card.get("trial_id"),
        "experiment": card.get("experiment"),
        "source_checkpoint": card.get("source_checkpoint"),
        "val_accuracy": val.get("val_accuracy"),
        "test_accuracy": test.get("accuracy"),
        "data_fingerprint": card.get("data_fingerprint"),
        "gate": _gate_text(decision, refused, forced),
        "forced": forced,
        "previous": card.get("previous"),
    }
    if decision is not None:
        tags |= {"gate.reviews": decision.reviews, "gate.against": decision.against, "gate.passed": decision.passed}
        tags |= {"gate.drawn": decision.drawn, "gate.seen_before": decision.seen_before}
        if decision.gain is not None:
            tags |= {"gate.gain": decision.gain, "gate.interval": decision.interval}
    if refused:
        tags["refused"] = decision.refusal()
    return {TAG + k: str(v) for k, v in tags.items() if v is not None}


def _gate_text(decision: GateResult | None, refused: bool, forced: bool) -> str:
    if decision is None:
        return "no gate split (forced)"
    if decision.against is None:
        accuracy = "" if decision.candidate_accuracy is None else f", gate accuracy {decision.candidate_accuracy:.4f}"
        return f"the first champion{accuracy}"
    verdict = "refused" if refused else ("below the gate, forced" if not decision.passed and forced else "passed")
    return f"{decision.gain_text()}: {verdict}"


def rollback_in_mlflow(uri: str, name: str, to: str | None = None) -> tuple[int | None, int]:
    """Move @champion to the version before it (or --to N), checked whole before it can serve. As in
    the folder registry, "before" is the newest earlier version the gate did not refuse."""
    registry = MlflowRegistry(uri, name)
    registry.require()
    with registry.locked():
        now = registry.alias(CHAMPION)
        if to is not None:
            target = version_number(to)
        elif now is None:
            raise UserError(f"{name}: no @{CHAMPION} to roll back from; give --to N")
        else:
            earlier = [int(v.version) for v in registry.versions() if int(v.version) < now and REFUSED not in v.tags]
            if not earlier:
                raise UserError(f"{name}: no version before v{now} to roll back to")
            target = earlier[-1]
        registry.fetch(target)  # every sha256 checked: a broken version never becomes champion
        registry.set_alias(CHAMPION, target)
    return now, target


def mlflow_rows(uri: str) -> list[dict]:
    """Every version of every registered model, with its aliases and gate result."""
    client, rows = client_for(uri), []
    for model in sorted(client.search_registered_models(), key=lambda m: m.name):
        named = _aliases_by_version(client.get_registered_model(model.name).aliases)  # search leaves them out
        for v in sorted(client.search_model_versions(f"name = '{model.name}'"), key=lambda v: int(v.version)):
            aliases = named.get(str(v.version), [])
            rows.append(
                {
                    "name": model.name,
                    "version": f"v{v.version}",
                    "aliases": aliases,
                    "current": CHAMPION in aliases,
                    "damaged": None,
                    "test_accuracy": _number(v.tags.get(TAG + "test_accuracy")),
                    "val_accuracy": _number(v.tags.get(TAG + "val_accuracy")),
                    "gate": v.tags.get(TAG + "gate"),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(v.creation_timestamp / 1000)),
                    "trial_id": v.tags.get(TAG + "trial_id"),
                }
            )
    return rows


def _aliases_by_version(aliases) -> dict[str, list[str]]:
    """MLflow's alias table ({alias: version}, or a list of entries by server version) turned round."""
    pairs = aliases.items() if isinstance(aliases, dict) else ((a.alias, a.version) for a in aliases or [])
    found: dict[str, list[str]] = {}
    for alias, version in sorted(pairs):
        found.setdefault(str(version), []).append(alias)
    return found


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None
