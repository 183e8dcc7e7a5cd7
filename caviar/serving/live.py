"""The model a running `caviar serve` answers with, and how it follows the registry's `current`.

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


class Follower:
    """Watch `current`; when it names another version, load and check that one off the event loop,
    then hand it to `swap`. A target that failed is not retried until `current` changes again."""

    def __init__(self, link: Path, serving: Callable[[], LoadedModel], swap: Callable[[LoadedModel], None], log):
        self.link, self.serving, self.swap, self.log = Path(link), serving, swap, log
        self.refused: str | None = None  # the target whose check failed, until `current` moves on

    def target(self) -> str | None:
        try:
            return os.readlink(self.link)
        except OSError:
            return None  # removed mid-swap or not a link: keep serving what answers now

    async def check_once(self) -> None:
        target, before = self.target(), self.serving()
        if target == before.folder.name:
            self.refused = None  # back where it was (a rollback past a refused version)
        if target in (None, before.folder.name, self.refused):
            return
        try:
            # resolved as start-up resolves it: a sibling v<N> only, itself no link (issue 47, item 4)
            folder = no_link(self.link.parent / current_version(self.link.parent))
            loaded = await asyncio.to_thread(load_checked, folder)
        except UserError as err:
            self.refused = target
            self.log(f"not swapping to {before.name}/{target}: {err}; {before.label} keeps serving")
            return
        self.refused = None
        self.swap(loaded)
        self.log(f"now serving {loaded.label} (was {before.label}): {self.link} changed")

    async def run(self, every_s: float = FOLLOW_EVERY_S) -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.check_once()
            except Exception as err:  # the follower must never stop serving: say it, try next tick
                self.log(f"following {self.link}: {short(f'{type(err).__name__}: {err}', 160)}")
