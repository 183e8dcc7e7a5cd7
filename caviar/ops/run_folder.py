"""A run's output folder: made before any work starts, and gone again if the run made nothing worth
keeping, so a failed run leaves no empty experiment behind; a full disk on the way is one line."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

from model.errors import UserError
from model.files import check_room, is_out_of_space, out_of_space

AGAIN = "run it again once there is room"


@contextlib.contextmanager
def run_folder(folder: Path, keep_if=None, need: int = 0, resume_hint: str | None = None) -> Iterator[Path]:
    """Create the output folder before any work starts (a bad path or a full disk fails in a second);
    if the run then fails before it made anything worth keeping (`keep_if`; by default, anything at
    all), the folder goes, so no empty experiment is left. A full disk on the way is one line."""
    fresh = not folder.exists()
    check_room(folder, need, f"free some and {AGAIN}", what="the run folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{folder}: cannot create the run folder ({err.strerror})") from None
    try:
        yield folder
    except BaseException as err:
        worth_keeping = keep_if() if keep_if is not None else any(folder.iterdir())
        if fresh and folder.is_dir() and not worth_keeping:
            shutil.rmtree(folder, ignore_errors=True)
        if not isinstance(err, UserError) and is_out_of_space(err):
            raise out_of_space(folder, resume_hint if resume_hint and worth_keeping else AGAIN) from None
        raise
