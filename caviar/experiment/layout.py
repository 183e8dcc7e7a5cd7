"""Where an experiment's results go: a local folder or a URI Ray's storage_path takes (s3://, gs://).

One type for both, so no code wraps a URI in Path (which folds "s3://" into "s3:/") and asks
"is it remote?" only here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from model.errors import UserError


@dataclass(frozen=True)
class Storage:
    root: str  # an absolute local path, or a URI

    @classmethod
    def of(cls, storage: str) -> Storage:
        return cls(storage.rstrip("/") if "://" in storage else str(Path(storage).expanduser().resolve()))

    @property
    def is_remote(self) -> bool:
        return "://" in self.root

    def uri(self, experiment: str) -> str:
        """The experiment's location as Ray and the user see it."""
        return f"{self.root}/{experiment}"

    def local(self, experiment: str) -> Path:
        """The experiment's folder on this machine; remote storage has none."""
        if self.is_remote:
            raise UserError(f"{self.uri(experiment)} is remote: copy it to a local folder first")
        return Path(self.root) / experiment


def timestamped(name: str) -> str:
    """<name>-<YYYYmmdd-HHMMSS>: the default name of every run, experiment and lr-find folder."""
    return f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
