"""Label Korean reviews with a checkpoint: 긍정 (positive) or 부정 (negative), and P(긍정).

To run: caviar predict "이 영화 정말 재미있어요"   (or Predictor.from_checkpoint(path).predict([...]))
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from model.batches import DeviceSplit, encode
from model.checkpoint import load_checkpoint
from model.data import LABEL_NAMES
from model.device import pick_device
from model.evaluate import positive_probabilities

PREDICT_BATCH = 64


# Format and control characters (direction marks, zero-width spaces, NUL) that draw nothing: glued
# to a word they made the tokenizer read it as unknown, so "\u200f좋아요\u200e" scored as an empty
# text (issue 47). Whitespace controls (tab, newline) stay: the tokenizer splits on them.
@functools.cache
def _invisible() -> re.Pattern:
    marks = (chr(c) for c in range(sys.maxunicode + 1))
    return re.compile("[" + "".join(re.escape(m) for m in marks if _is_invisible(m)) + "]")


def _is_invisible(ch: str) -> bool:
    return unicodedata.category(ch) in ("Cf", "Cc") and not ch.isspace()


def without_invisible_marks(text: str) -> str:
    return _invisible().sub("", text)


@dataclass
class Prediction:
    label: str
    label_id: int
    positive_probability: float

    @property
    def confidence(self) -> float:
        """The probability of the label given, not always of 긍정."""
        return self.positive_probability if self.label_id == 1 else 1.0 - self.positive_probability

    def as_dict(self) -> dict:
        return asdict(self)


class Predictor:
    def __init__(self, net, tokenizer, max_len: int, device: torch.device):
        self.net, self.tokenizer, self.max_len, self.device = net.to(device).eval(), tokenizer, max_len, device

    @classmethod
    def from_checkpoint(cls, folder: Path, device: str = "auto") -> Predictor:
        loaded = load_checkpoint(folder)
        return cls(loaded.net, loaded.tokenizer, loaded.config.model.max_len, pick_device(device))

    def probabilities(self, texts: list[str]) -> np.ndarray:
        readable = [without_invisible_marks(text) for text in texts]
        data = encode(self.tokenizer, readable, np.zeros(len(texts)), self.max_len)
        return positive_probabilities(self.net, DeviceSplit(data, self.device), PREDICT_BATCH)

    def predict(self, texts: list[str]) -> list[Prediction]:
        return [
            Prediction(label=LABEL_NAMES[int(p >= 0.5)], label_id=int(p >= 0.5), positive_probability=float(p))
            for p in self.probabilities(texts)
        ]
