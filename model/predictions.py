"""Per-example validation predictions, kept with each checkpoint: the labels and P(긍정), compact.

Two checkpoints scored on the same reviews can then be compared pairwise, which is far tighter than
comparing two accuracies, and nothing has to run again to do it (caviar/experiment/selection.py).
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.files import atomic_path

PREDICTIONS = "val_predictions.npz"


@dataclass(frozen=True)
class Predictions:
    labels: np.ndarray  # int8, 0 = 부정, 1 = 긍정, in the split's order
    positive: np.ndarray  # float32, P(긍정)

    @classmethod
    def of(cls, labels, positive) -> Predictions:
        return cls(np.asarray(labels, dtype=np.int8), np.asarray(positive, dtype=np.float32))

    def save(self, folder: Path) -> None:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, labels=self.labels, positive=self.positive)
        with atomic_path(Path(folder) / PREDICTIONS) as tmp:
            tmp.write_bytes(buffer.getvalue())

    @classmethod
    def load(cls, folder: Path) -> Predictions | None:
        """None when the folder holds none, or holds a damaged file (a comparison then leaves it out)."""
        path = Path(folder) / PREDICTIONS
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as saved:
                labels, positive = saved["labels"], saved["positive"]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # a zip header and garbage too
            return None
        if labels.shape != positive.shape or labels.ndim != 1:
            return None
        return cls.of(labels, positive)

    def same_examples(self, other: Predictions) -> bool:
        return len(self.labels) == len(other.labels) and bool(np.array_equal(self.labels, other.labels))
