"""Tokenized reviews in length-bucketed, dynamically padded batches.

NSMC reviews run from 2 to ~120 tokens (mean ~18); padding each batch only to its longest
review, and grouping similar lengths, cuts the work per epoch several times over.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

BUCKET_BATCHES = 50  # sort within windows of 50 batches: similar lengths, yet a shuffled epoch


@dataclass
class Encoded:
    """Token ids of a split, unpadded, with their labels."""

    ids: list[list[int]]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


def encode(tokenizer: PreTrainedTokenizerBase, texts: list[str], labels, max_len: int) -> Encoded:
    ids = tokenizer(list(texts), truncation=True, max_length=max_len)["input_ids"]
    return Encoded(ids=ids, labels=np.asarray(labels, dtype=np.int64))


def epoch_batches(data: Encoded, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The batch order of one epoch, a pure function of (seed, epoch) so a resumed run replays it."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(data))
    lengths = np.fromiter((len(x) for x in data.ids), dtype=np.int64, count=len(data))
    window = batch_size * BUCKET_BATCHES
    batches = []
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def eval_batches(data: Encoded, batch_size: int) -> list[np.ndarray]:
    """Sorted by length: evaluation order does not matter, padding does."""
    order = np.argsort([len(x) for x in data.ids], kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def collate(data: Encoded, rows: np.ndarray, pad_id: int) -> dict[str, torch.Tensor]:
    lengths = torch.tensor([len(data.ids[r]) for r in rows])
    input_ids = torch.full((len(rows), int(lengths.max())), pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, : lengths[i]] = torch.as_tensor(data.ids[r])
    return {
        "input_ids": input_ids,
        "attention_mask": (torch.arange(input_ids.shape[1]) < lengths[:, None]).long(),
        "labels": torch.as_tensor(data.labels[rows]),
    }
