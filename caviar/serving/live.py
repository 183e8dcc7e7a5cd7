"""The model a running `caviar serve` answers with, and how it follows the registry's `current`
(or, on MLflow's registry, `@champion`).

A promotion or a rollback swaps `current`; the follower sees the link change, loads the version it
names beside the one answering, checks it (every checksum, the files loading, one warm-up
prediction) and only then swaps it in. A version that fails its check is never swapped in: the old
one keeps answering and the log says why in one line. Polling a link once a second is portable
(no inotify on network file systems) and costs one readlink.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from caviar.registry.store import CURRENT, current_version, no_link, public_card, verify
from model.errors import UserError, short
from model.predict import Prediction, Predictor

WARM_UP = "배우들 연기가 좋았다"
FOLLOW_EVERY_S = 1.0


@dataclass(frozen=True)
class LoadedModel:
    """One checked version, ready to answer: what /health, /model and every answer name."""

    folder: Path
    card: dict
    shown_card: dict  # without this machine's absolute paths (public_card)
    predictor: Predictor

    @property
    def name(self) -> str:
        return str(self.card.get("name", "?"))

    @property
    def version(self) -> str:
        return str(self.card.get("version", "?"))

    @property
    def label(self) -> str:
        return f"{self.name}/{self.version}"

    def predict(self, texts: list[str]) -> list[Prediction]:
        return self.predictor.predict(texts)


def load_checked(folder: Path) -> LoadedModel:
    """Verify the checksums, load the files and run one prediction; any failure is a UserError."""
    card = verify(folder)
    try:
        predictor = Predictor.from_checkpoint(folder)
        (warm,) = predictor.predict([WARM_UP])
    except UserError:
        raise
    except Exception as err:  # a file that passes its checksum but does not load or predict
        raise UserError(f"{folder}: does not load or predict ({short(f'{type(err).__name__}: {err}', 160)})") from None
    if not 0.0 <= warm.positive_probability <= 1.0:
        raise UserError(f"{folder}: its warm-up prediction is {warm.positive_probability}, not a probability")
    return LoadedModel(Path(folder), card, public_card(card), predictor)


def follows_registry(folder: Path) -> bool:
    """Serving a registry's `current` link (the default) follows it; a version folder given by
    --model is pinned."""
    return Path(folder).name == CURRENT and Path(folder).is_symlink()


class LinkSource:
    """What a folder registry serves: the version its `current` link names, a sibling v<N> only."""

    def __init__(self, link: Path):
        self.link = Path(link)
        self.where = str(self.link)

    def target(self) -> str | None:
        try:
            return os.readlink(self.link)
        except OSError:
            return None  # removed mid-swap or not a link: keep serving what answers now

    def folder(self, _target: str | None) -> Path:
        # resolved as start-up resolves it: a sibling v<N> only, itself no link (issue 47, item 4)
        return no_link(self.link.parent / current_version(self.link.parent))


class AliasSource:
    """What MLflow's registry serves: the version `@champion` names, downloaded and checked."""

    def __init__(self, registry, alias: str):
        self.registry, self.alias = registry, alias
        self.where = f"models:/{registry.name}@{alias} in MLflow at {registry.uri}"

    def target(self) -> str | None:
        number = self.registry.alias(self.alias)
        return None if number is None else f"v{number}"

    def folder(self, target: str | None) -> Path:
        if target is None:
            raise UserError(f"{self.registry.name}: no version is @{self.alias} in MLflow at {self.registry.uri}")
        return self.registry.fetch(int(target.removeprefix("v")))


class Follower:
    """Watch the source (`current`, or an MLflow alias); when it names another version, load and
    check that one off the event loop, then hand it to `swap`. A target that failed is not retried
    until the source changes again."""

    def __init__(self, source, serving: Callable[[], LoadedModel], swap: Callable[[LoadedModel], None], log):
        self.source, self.serving, self.swap, self.log = source, serving, swap, log
        self.refused: str | None = None  # the target whose check failed, until the source moves on

    async def check_once(self) -> None:
        target, before = await asyncio.to_thread(self.source.target), self.serving()
        if target == before.folder.name:
            self.refused = None  # back where it was (a rollback past a refused version)
        if target in (None, before.folder.name, self.refused):
            return
        try:
            loaded = await asyncio.to_thread(lambda: load_checked(self.source.folder(target)))
        except UserError as err:
            self.refused = target
            self.log(f"not swapping to {before.name}/{target}: {err}; {before.label} keeps serving")
            return
        self.refused = None
        self.swap(loaded)
        self.log(f"now serving {loaded.label} (was {before.label}): {self.source.where} changed")

    async def run(self, every_s: float = FOLLOW_EVERY_S) -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.check_once()
            except Exception as err:  # the follower must never stop serving: say it, try next tick
                self.log(f"following {self.source.where}: {short(f'{type(err).__name__}: {err}', 160)}")
