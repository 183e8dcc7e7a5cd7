"""The watch on disk space while trials run: a Ray Tune callback (sizes in ops/disk_room.py)."""

from __future__ import annotations

import logging
import time
from errno import ENOSPC
from pathlib import Path

from ray.tune import Callback

from model.files import free_bytes

log = logging.getLogger("caviar.tune")
CHECK_EVERY_S = 2.0


class OutOfRoom(Exception):
    """Raised by DiskGuard inside Ray's loop; the pipeline turns it into the one line."""

    errno = ENOSPC  # so that model.files.is_out_of_space knows it wherever Ray passes it on

    def __init__(self, folder: Path, free: int, reserve: int):
        super().__init__(f"{folder}: {free / 1e6:,.0f} MB free, under the {reserve / 1e6:,.0f} MB a run keeps")
        self.folder = folder


class DiskGuard(Callback):
    """Stops the run once `folder`'s free space falls under `reserve` bytes, before a writer hits
    ENOSPC; checked every CHECK_EVERY_S seconds of Ray's loop. Ray pickles it with the run, so a
    resumed run keeps it."""

    def __init__(self, folder: Path, reserve: int):
        self.folder, self.reserve, self.checked = Path(folder), reserve, None

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        if self.checked is None:  # first checked a few seconds in, once Ray has saved its state
            self.checked = time.monotonic()
        if time.monotonic() - self.checked < CHECK_EVERY_S:
            return
        self.checked = time.monotonic()
        if (free := free_bytes(self.folder)) < self.reserve:
            log.error("the disk is nearly full (%s MB free): stopping the run", f"{free / 1e6:,.0f}")
            raise OutOfRoom(self.folder, free, self.reserve)
