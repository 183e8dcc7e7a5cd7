"""The model registry: results/registry/<name>/v<N>/ plus an atomic `current` alias.

To run: caviar promote results/<experiment> [--name nsmc-sentiment] [--force]
        caviar registry list | show NAME [VERSION] | rollback NAME [--to vN]

A version is the best checkpoint's serving files (no optimizer state) and a model_card.json with
the sha256 of every file. It is built in a temp folder and renamed into place; `current` is a
symlink swapped with os.replace, so a crash at any point leaves the previous `current` loadable.
A lock per model holds from choosing the version number to swapping `current`, so concurrent
promotions never share a number or a `previous`; leftovers of killed promotions are swept away.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import re
import shutil
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

from filelock import FileLock

from caviar.experiment.layout import registry_root
from model.checkpoint import CONFIG, META, STATE, TOKENIZER, WEIGHTS
from model.config import SAFE_NAME, check_safe_name
from model.errors import UserError, short
from model.files import file_sha256, process_alive, read_json_object, write_json_atomically
from model.predictions import PREDICTIONS

CARD = "model_card.json"
CURRENT = "current"
LOCK = ".lock"  # stays: a FileLock file is left in place on purpose (removing it races other holders)
PACKAGES = ("caviar", "torch", "transformers", "tokenizers", "ray", "fastapi")
VERSION = re.compile(r"v[1-9][0-9]*")
LEFTOVER = re.compile(r"\.(?:v[0-9]+|current)\.([0-9]+)\.tmp")  # what a killed promotion leaves


class Refused(Exception):
    """Promotion refused on purpose (a worse model); exit 1, unlike a user mistake."""


def model_dir_of(name: str, root: Path | None = None) -> Path:
    """<root>/<name>, for a name that cannot leave the registry (no '/', '..', absolute paths, links)."""
    return no_link(Path(root or registry_root()) / check_safe_name(name, "model name"))


def no_link(path: Path) -> Path:
    """The registry follows no link but `current` (and that one only to a sibling version): a
    planted link would lead reads and writes out of it."""
    if path.is_symlink():
        raise UserError(f"{path}: is a link to {short(os.readlink(path), 80)}; the registry follows none but `current`")
    return path


def version_dir_of(name: str, version: str = CURRENT, root: Path | None = None) -> Path:
    if version != CURRENT and not VERSION.fullmatch(version):
        raise UserError(f"version {version[:40]!r}: expected {CURRENT} or v<N>, e.g. v3")
    model_dir = model_dir_of(name, root)
    if version == CURRENT:
        current_version(model_dir)  # a `current` that leads out of the model is refused here
        return model_dir / CURRENT
    return no_link(model_dir / version)


sha256 = file_sha256  # the registry's name for it: every file of a version is checked by it


def versions(model_dir: Path) -> list[str]:
    """The version folders; a link named like one is no version (no_link says so where it is read)."""
    found = [p.name for p in model_dir.glob("v*") if p.is_dir() and not p.is_symlink() and VERSION.fullmatch(p.name)]
    return sorted(found, key=lambda v: int(v[1:]))


def current_version(model_dir: Path) -> str | None:
    """The version `current` names: a sibling v<N>, or a one-line UserError for any other target."""
    link = model_dir / CURRENT
    if not link.is_symlink():
        if link.exists():
            raise UserError(f"{link}: is not a link; the registry's `current` must link to a version")
        return None
    target = os.readlink(link)
    if not VERSION.fullmatch(target):
        raise UserError(
            f"{link}: points at {short(target, 80)}, not at a version beside it (v<N>); "
            "repair it with caviar registry rollback NAME --to v<N>"
        )
    return target


def read_card(version_dir: Path) -> dict:
    """The card, checked for the shape every reader relies on; damage is a one-line UserError."""
    path = Path(version_dir) / CARD
    if not path.is_file():
        raise UserError(f"{version_dir}: no {CARD}; not a registry version")
    card = read_json_object(path)
    files = card.get("files")
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise UserError(f"{path}: damaged, no 'files' table of sha256 checksums")
    if missing := [name for name in (WEIGHTS, META, CONFIG, TOKENIZER) if name not in files]:  # what a load reads
        raise UserError(f"{path}: damaged, its 'files' table does not list {', '.join(missing)}")
    return card


def verify(version_dir: Path) -> dict:
    """Every file the card lists must be there with its sha256; the card itself is the anchor."""
    card = read_card(version_dir)
    for name, expected in card["files"].items():
        if Path(name).name != name:
            raise UserError(f"{version_dir}: damaged card, file name {name[:60]!r} is not a plain name")
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


def set_current(model_dir: Path, version: str) -> str | None:
    """Point `current` at `version`, atomically. A `current` that is a folder (copied in by hand)
    is kept aside, not deleted: returns where it went."""
    link, aside = model_dir / CURRENT, None
    if link.is_dir() and not link.is_symlink():  # os.replace cannot put a link over a folder
        aside = model_dir / f"{CURRENT}.folder-{time.strftime('%Y%m%d-%H%M%S')}"
        os.replace(link, aside)
    tmp = model_dir / f".{CURRENT}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(version, tmp)
    try:
        os.replace(tmp, link)  # atomic: readers see the old or the new alias, never none
    finally:
        tmp.unlink(missing_ok=True)
    return None if aside is None else aside.name


@contextlib.contextmanager
def locked(model_dir: Path) -> Iterator[None]:
    """Held from reading `current` to swapping it: one promotion or rollback of a model at a time."""
    model_dir.mkdir(parents=True, exist_ok=True)
    no_link(model_dir)
    lock = no_link(model_dir / LOCK)
    if lock.exists() and not lock.is_file():
        raise UserError(f"{lock}: is a folder, not the registry's lock file; remove it (rmdir) and run it again")
    with FileLock(str(lock)):
        sweep_leftovers(model_dir)
        yield


def sweep_leftovers(model_dir: Path) -> list[str]:
    """Remove the temp folders and links of promotions whose process is gone (a kill -9 mid-copy)."""
    removed = []
    for path in model_dir.glob(".*.tmp"):
        match = LEFTOVER.fullmatch(path.name)
        if match is None or process_alive(int(match.group(1))):
            continue
        if path.is_symlink() or path.is_file():
            path.unlink(missing_ok=True)
        else:
            shutil.rmtree(path, ignore_errors=True)
        removed.append(path.name)
    return removed


def version_holding(model_dir: Path, weights_sha256: str) -> str | None:
    """The version whose weights are these (a checkpoint promoted twice); damaged cards are skipped."""
    if not model_dir.is_dir():
        return None
    for version in versions(model_dir):
        try:
            if read_card(model_dir / version)["files"].get(WEIGHTS) == weights_sha256:
                return version
        except UserError:
            continue
    return None


def serving_files(checkpoint: Path) -> list[Path]:
    """What a version holds of a checkpoint: everything but the optimizer state and the validation
    predictions (which only compare checkpoints within an experiment)."""
    return sorted(p for p in Path(checkpoint).iterdir() if p.is_file() and p.name not in (STATE, PREDICTIONS))


def add_version(model_dir: Path, checkpoint: Path, card: dict) -> str:
    """Copy the serving files into v<N> (built aside, renamed into place); returns 'v<N>'.
    Call it under `locked(model_dir)`."""
    model_dir.mkdir(parents=True, exist_ok=True)
    existing = versions(model_dir)
    version = f"v{int(existing[-1][1:]) + 1 if existing else 1}"
    # a link or file planted under the next name is no version: named, and stepped over (issue 47)
    taken = {p.name for p in model_dir.glob("v*") if VERSION.fullmatch(p.name) and p.name not in existing}
    while version in taken:
        logging.getLogger("caviar").warning(
            "%s: is not a version (a link or a file); promoting as the next free number", model_dir / version
        )
        version = f"v{int(version[1:]) + 1}"
    tmp = model_dir / f".{version}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        files = {}
        for src in serving_files(checkpoint):
            shutil.copy2(src, tmp / src.name)
            files[src.name] = sha256(tmp / src.name)
        write_json_atomically(tmp / CARD, {**card, "version": version, "files": files})
        os.rename(tmp, model_dir / version)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return version


def rollback(model_dir: Path, to: str | None = None) -> str:
    with locked(model_dir):
        all_versions = versions(model_dir)
        now = current_version(model_dir) if to is None else None  # --to also repairs a damaged `current`
        if to is None:
            older = [v for v in all_versions if now and int(v[1:]) < int(now[1:])]
            if not older:
                raise UserError(f"{model_dir.name}: no version before {now} to roll back to")
            to = older[-1]
        if to not in all_versions:
            raise UserError(f"{model_dir.name}: no version {to[:40]} (have {', '.join(all_versions) or 'none'})")
        verify(model_dir / to)
        if aside := set_current(model_dir, to):
            logging.getLogger("caviar").warning("%s was a folder, not a link: kept as %s", model_dir / CURRENT, aside)
    return to


def list_models(root: Path) -> list[dict]:
    """Every version of every model; a damaged version is listed with what is wrong, not fatal."""
    rows = []
    for model_dir in sorted(p for p in root.glob("*") if p.is_dir() and SAFE_NAME.fullmatch(p.name)):
        if model_dir.is_symlink():
            continue  # planted: never followed (no_link)
        try:
            now = current_version(model_dir)
        except UserError:
            now = None  # a damaged `current` marks no version; the versions are still listed
        for version in versions(model_dir):
            row = {"name": model_dir.name, "version": version, "current": version == now, "damaged": None}
            try:
                card = read_card(model_dir / version)
            except UserError as err:
                rows.append(row | {"damaged": str(err).removeprefix(f"{model_dir / version}: ")})
                continue
            test, val = card.get("test"), card.get("val")
            row.update(
                test_accuracy=_number(test.get("accuracy")) if isinstance(test, dict) else None,
                val_accuracy=_number(val.get("val_accuracy")) if isinstance(val, dict) else None,
                created=card.get("created"),
                trial_id=card.get("trial_id"),
            )
            rows.append(row)
    return rows


def _number(value) -> float | None:
    """A card's figure, or None where the card holds something else (a hand-edited "high")."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def relative_to_registry(path: str | Path, root: Path | None = None) -> str:
    """A path as the card records it: relative to the registry root, never this machine's absolute path."""
    return os.path.relpath(Path(path).resolve(), Path(root or registry_root()).resolve())


def public_card(card: dict, root: Path | None = None) -> dict:
    """The card as the service shows it: every absolute path (the training data folder, older cards'
    checkpoints) made relative to the registry, so no local layout leaks to clients."""

    def shown(value):
        if isinstance(value, dict):
            return {k: shown(v) for k, v in value.items()}
        if isinstance(value, list):
            return [shown(v) for v in value]
        if isinstance(value, str) and os.path.isabs(value):
            return relative_to_registry(value, root)
        return value

    return shown(card)


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
