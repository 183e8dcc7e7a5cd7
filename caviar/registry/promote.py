"""`caviar promote`: the experiment's best checkpoint (chosen on validation) into the registry.

To run: caviar promote results/<experiment> [--name nsmc-sentiment] [--force]
        caviar promote results/train/<run>      (one `caviar train` run: its best checkpoint)

The candidate is scored on the NSMC test file; if that is below the current version's score,
promotion is refused unless --force.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from caviar.experiment.record import Experiment
from caviar.job.schema import JobSpec
from caviar.registry import store as registry
from caviar.tuning.reseed import reseed
from caviar.tuning.single_run import RESULT as TRAIN_RESULT
from model.checkpoint import META, is_checkpoint
from model.data import load_splits
from model.errors import UserError
from model.evaluate import Metrics, evaluate_checkpoint


def promote(
    experiment_dir: Path,
    name: str,
    force: bool = False,
    root: Path | None = None,
    reseed_seeds: int | None = None,
    top_k: int | None = None,
) -> dict:
    experiment_dir = Path(experiment_dir).resolve()
    root = Path(root or registry.registry_root())
    model_dir = registry.model_dir_of(name, root)  # checked before any work: the name must stay inside
    if (experiment_dir / TRAIN_RESULT).is_file():
        if reseed_seeds:
            raise UserError(f"{experiment_dir}: seed re-runs need a tuning experiment, not one train run")
        job, trial, checkpoint, spread = *_train_run(experiment_dir), None
    else:
        experiment = Experiment.load(experiment_dir)
        job = experiment.job
        trial, checkpoint, spread = _candidate(experiment, reseed_seeds or job.final.seeds, top_k or job.final.top_k)
    saved = json.loads((checkpoint / META).read_text(encoding="utf-8"))
    meta = saved["metrics"]
    splits = load_splits(job.data)
    test = Metrics(**spread["best_run"]["test_metrics"]) if spread else evaluate_checkpoint(checkpoint, splits.test)

    with registry.locked(model_dir):
        previous = registry.current_version(model_dir)
        if previous is not None and not force:
            old = registry.read_card(model_dir / previous).get("test", {}).get("accuracy", -1.0)
            if test.accuracy < old:
                raise registry.Refused(
                    f"candidate test_accuracy {test.accuracy:.4f} is below {name}/{previous}'s {old:.4f}; "
                    "not promoted (--force promotes it anyway)"
                )
        card = _card(name, job, experiment_dir, trial, saved, meta, test, splits, checkpoint, previous, spread, root)
        version = registry.add_version(model_dir, checkpoint, card)
        registry.set_current(model_dir, version)
    return {
        "name": name,
        "version": version,
        "path": str(model_dir / version),
        "previous": previous,
        "test_accuracy": test.accuracy,
        "val_accuracy": meta.get("val_accuracy"),
        "forced": bool(force and previous),
        "reseed": card.get("reseed"),
    }


def _train_run(folder: Path) -> tuple[JobSpec, SimpleNamespace, Path]:
    """A `caviar train` run as a candidate: its one configuration and the checkpoint it kept."""
    result = json.loads((folder / TRAIN_RESULT).read_text(encoding="utf-8"))
    checkpoint = folder / "checkpoint"
    if not is_checkpoint(checkpoint):
        raise UserError(f"{folder}: the run kept no checkpoint; nothing to promote")
    return JobSpec.model_validate(result["config"]), SimpleNamespace(trial_id="train", params={}), checkpoint


def _candidate(experiment: Experiment, seeds: int | None, top_k: int):
    """(trial, checkpoint, seed spread): the best trial's best checkpoint, or with seed re-runs, the
    best seed of the configuration whose mean validation score is best."""
    found = experiment.best()
    if found is None:
        raise UserError(f"{experiment.folder}: no trial reported {experiment.job.metric}; nothing to promote")
    trial, _ = found
    checkpoint, spread = experiment.best_checkpoint(trial), None
    if seeds:
        spread = reseed(experiment, seeds, top_k)
        chosen = next(c for c in spread["configs"] if c["rank"] == spread["chosen_rank"])
        trial = next(t for t in experiment.trials() if t.trial_id == chosen["source_trial"])
        checkpoint = Path(spread["best_run"]["checkpoint"])
    if checkpoint is None:
        raise UserError(f"{experiment.folder}: the best trial {trial.trial_id} kept no checkpoint")
    return trial, checkpoint, spread


def _card(name, job, experiment_dir, trial, saved, meta, test, splits, checkpoint, previous, spread, root) -> dict:
    return {
        "name": name,
        "job": job.name,
        "experiment": registry.relative_to_registry(experiment_dir, root),
        "trial_id": trial.trial_id,
        "hparams": trial.params,
        "config": saved["config"],
        "val": {k: v for k, v in meta.items() if k.startswith("val_")} | {"step": meta.get("step")},
        "test": {
            "accuracy": test.accuracy,
            "f1": test.f1,
            "loss": test.loss,
            "confusion": test.confusion,
            "examples": len(splits.test),
        },
        "data_fingerprint": splits.fingerprint,
        "pretrained": _card_origin(saved.get("pretrained"), root),
        "packages": registry.package_versions(),
        "created": registry.now_iso(),
        "source_checkpoint": registry.relative_to_registry(checkpoint, root),
        "previous": previous,
        **({"reseed": _card_spread(spread)} if spread else {}),
    }


def _card_origin(origin: dict | None, root) -> dict | None:
    """The encoder fine-tuning started from: a local folder as a registry-relative path, or a hub id."""
    if not origin:
        return None
    source = origin["source"]
    shown = registry.relative_to_registry(source, root) if Path(source).is_absolute() else source
    return {"source": shown, "fingerprint": origin.get("fingerprint")}


def _card_spread(spread: dict) -> dict:
    """Mean and spread of every re-run configuration; the chosen one first."""
    configs = sorted(spread["configs"], key=lambda c: c["rank"] != spread["chosen_rank"])
    keep = ("rank", "source_trial", "params", "val_mean", "val_std", "test_mean", "test_std")
    return {
        "seeds": spread["seeds"],
        "chosen_rank": spread["chosen_rank"],
        "best_seed": spread["best_run"]["seed"],
        "configs": [{k: c[k] for k in keep} | {"seeds": [r["seed"] for r in c["runs"]]} for c in configs],
    }
