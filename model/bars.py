"""Progress bars on a terminal only: in a log file (a cluster job, `make tune > log`, CI) tqdm's
carriage-return redraws become thousands of lines, so there the bars are off and the evaluation
lines alone tell the progress."""

from __future__ import annotations

import sys

from tqdm import tqdm


def progress_bar(total: int, desc: str, unit: str, enabled: bool = True, **options) -> tqdm:
    """A tqdm bar on stderr, shown only when `enabled` and stderr is a terminal."""
    return tqdm(
        total=total, desc=desc, unit=unit, disable=not (enabled and sys.stderr.isatty()), file=sys.stderr, **options
    )
