"""The model registry: results/registry/<name>/v<N>/ plus an atomic `current` alias.

To run: caviar promote results/<experiment> [--name nsmc-sentiment] [--force]
        caviar registry list | show NAME [VERSION] | rollback NAME [--to vN]

A version is the best checkpoint's serving files (no optimizer state) and a model_card.json with
the sha256 of every file. It is built in a temp folder and renamed into place; `current` is a
symlink swapped with os.replace, so a crash at any point leaves the previous `current` loadable.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import time
from importlib import metadata
from pathlib import Path

from model.checkpoint import STATE, write_json_atomically
from model.errors import UserError

CARD = "model_card.json"
CURRENT = "current"
PACKAGES = ("caviar", "torch", "transformers", "tokenizers", "ray", "fastapi")


class Refused(Exception):
    """Promotion refused on purpose (a worse model); exit 1, unlike a user mistake."""


def registry_root() -> Path:
    return Path(os.environ.get("CAVIAR_REGISTRY", "results/registry"))


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def versions(model_dir: Path) -> list[str]:
    found = [p.name for p in model_dir.glob("v*") if p.is_dir() and p.name[1:].isdigit()]
    return sorted(found, key=lambda v: int(v[1:]))


def current_version(model_dir: Path) -> str | None:
    link = model_dir / CURRENT
    return os.readlink(link) if link.is_symlink() else None


def read_card(version_dir: Path) -> dict:
    path = Path(version_dir) / CARD
    if not path.is_file():
        raise UserError(f"{version_dir}: no {CARD}; not a registry version")
    return json.loads(path.read_text(encoding="utf-8"))


def verify(version_dir: Path) -> dict:
    """Every file the card lists must be there with its sha256; the card itself is the anchor."""
    card = read_card(version_dir)
    for name, expected in card["files"].items():
        path = Path(version_dir) / name
        if not path.is_file():
            raise UserError(f"{version_dir}: {name} is missing; the model is incomplete")
        if sha256(path) != expected:
            raise UserError(f"{version_dir}: {name} fails its sha256 check; the model is corrupt")
    return card


def package_versions() -> dict:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def set_current(model_dir: Path, version: str) -> None:
    tmp = model_dir / f".{CURRENT}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(version, tmp)
    os.replace(tmp, model_dir / CURRENT)  # atomic: readers see the old or the new alias, never none


def add_version(model_dir: Path, checkpoint: Path, card: dict) -> str:
    """Copy the serving files into v<N> (built aside, renamed into place); returns 'v<N>'."""
    model_dir.mkdir(parents=True, exist_ok=True)
    existing = versions(model_dir)
    version = f"v{int(existing[-1][1:]) + 1 if existing else 1}"
    tmp = model_dir / f".{version}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        files = {}
        for src in sorted(p for p in Path(checkpoint).iterdir() if p.is_file() and p.name != STATE):
            shutil.copy2(src, tmp / src.name)
            files[src.name] = sha256(tmp / src.name)
        write_json_atomically(tmp / CARD, {**card, "version": version, "files": files})
        os.rename(tmp, model_dir / version)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return version


def rollback(model_dir: Path, to: str | None = None) -> str:
    all_versions = versions(model_dir)
    now = current_version(model_dir)
    if to is None:
        older = [v for v in all_versions if now and int(v[1:]) < int(now[1:])]
        if not older:
            raise UserError(f"{model_dir.name}: no version before {now} to roll back to")
        to = older[-1]
    if to not in all_versions:
        raise UserError(f"{model_dir.name}: no version {to} (have {', '.join(all_versions) or 'none'})")
    verify(model_dir / to)
    set_current(model_dir, to)
    return to


def list_models(root: Path) -> list[dict]:
    rows = []
    for model_dir in sorted(p for p in root.glob("*") if p.is_dir()):
        now = current_version(model_dir)
        for version in versions(model_dir):
            card = read_card(model_dir / version)
            rows.append(
                {
                    "name": model_dir.name,
                    "version": version,
                    "current": version == now,
                    "test_accuracy": card.get("test", {}).get("accuracy"),
                    "val_accuracy": card.get("val", {}).get("val_accuracy"),
                    "created": card.get("created"),
                    "trial_id": card.get("trial_id"),
                }
            )
    return rows


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
