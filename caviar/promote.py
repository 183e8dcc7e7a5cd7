"""`caviar promote`: the experiment's best checkpoint (chosen on validation) into the registry.

To run: caviar promote results/<experiment> [--name nsmc-sentiment] [--force]

The candidate is scored on the NSMC test file; if that is below the current version's score,
promotion is refused unless --force.
"""

from __future__ import annotations

from pathlib import Path

from caviar import registry
from caviar.experiment import best_trial, load_job_of, load_trials
from model.data import load_splits
from model.errors import UserError
from model.evaluate import evaluate_checkpoint


def promote(experiment_dir: Path, name: str, force: bool = False, root: Path | None = None) -> dict:
    experiment_dir = Path(experiment_dir).resolve()
    root = Path(root or registry.registry_root())
    job = load_job_of(experiment_dir)
    found = best_trial(load_trials(experiment_dir), job.metric, job.mode)
    if found is None:
        raise UserError(f"{experiment_dir}: no trial reported {job.metric}; nothing to promote")
    trial, _ = found
    checkpoint = trial.best_checkpoint(job.metric, job.mode)
    if checkpoint is None:
        raise UserError(f"{experiment_dir}: the best trial {trial.trial_id} kept no checkpoint")
    meta = trial.checkpoint_metrics(checkpoint)
    splits = load_splits(job.data)
    test = evaluate_checkpoint(checkpoint, splits.test)

    model_dir = root / name
    previous = registry.current_version(model_dir)
    if previous is not None:
        old = registry.read_card(model_dir / previous)["test"]
        if test.accuracy < old["accuracy"] and not force:
            raise registry.Refused(
                f"candidate test_accuracy {test.accuracy:.4f} is below {name}/{previous}'s {old['accuracy']:.4f}; "
                "not promoted (--force promotes it anyway)"
            )
    card = {
        "name": name,
        "job": job.name,
        "experiment": str(experiment_dir),
        "trial_id": trial.trial_id,
        "hparams": trial.params,
        "config": _trial_config(checkpoint),
        "val": {k: v for k, v in meta.items() if k.startswith("val_")} | {"step": meta.get("step")},
        "test": {
            "accuracy": test.accuracy,
            "f1": test.f1,
            "loss": test.loss,
            "confusion": test.confusion,
            "examples": len(splits.test),
        },
        "data_fingerprint": splits.fingerprint,
        "packages": registry.package_versions(),
        "created": registry.now_iso(),
        "source_checkpoint": str(checkpoint),
        "previous": previous,
    }
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
    }


def _trial_config(checkpoint: Path) -> dict:
    import json

    return json.loads((checkpoint / "caviar.json").read_text(encoding="utf-8"))["config"]
