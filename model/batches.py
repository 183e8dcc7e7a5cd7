"""Tokenized reviews as one padded array per split, cached on disk; batches cut from it on the device.

NSMC reviews run from 2 to ~120 tokens (mean ~18). A batch groups similar lengths and is padded
only to its longest review. On a GPU that width is rounded up to a multiple of 16, so a run meets
at most max_len/16 shapes (attention plans and compiled graphs are built per shape); on a CPU the
exact width is kept, since the padding is extra compute there (5.5 against 6.1 steps/s on full NSMC).
No step pays a Python loop over rows or a host-to-device copy: the split lives on the device, and
a batch is an index_select there.

Encoding a split once per (tokenizer, texts, max_len) and caching it as .npy arrays behind a file
lock means every trial on a node after the first loads it in well under a second.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass

import numpy as np
import torch
from filelock import FileLock
from transformers import PreTrainedTokenizerBase

from model.data import cache_root
from model.files import atomic_path

log = logging.getLogger("caviar.batches")
BUCKET_BATCHES = 50  # sort within windows of 50 batches: similar lengths, yet a shuffled epoch
BUCKET = {"cuda": 16}  # batch widths are multiples of this (or max_len) per device type; 1 elsewhere
CACHE_VERSION = "encoded-v1"


@dataclass
class Encoded:
    """Token ids of a split, padded into one (reviews, max_len) array, with lengths and labels."""

    ids: np.ndarray  # int32 [N, max_len]; pad_id past each review's length
    lengths: np.ndarray  # int32 [N]
    labels: np.ndarray  # int64 [N]

    def __len__(self) -> int:
        return len(self.lengths)

    def subset(self, rows: np.ndarray) -> Encoded:
        return Encoded(self.ids[rows], self.lengths[rows], self.labels[rows])


def encode(tokenizer: PreTrainedTokenizerBase, texts, labels, max_len: int) -> Encoded:
    rows = tokenizer(list(texts), truncation=True, max_length=max_len)["input_ids"]
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int32, count=len(rows))
    ids = np.full((len(rows), max_len), tokenizer.pad_token_id, dtype=np.int32)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
    return Encoded(ids=ids, lengths=lengths, labels=np.asarray(labels, dtype=np.int64))


def encode_cached(tokenizer: PreTrainedTokenizerBase, texts, labels, max_len: int) -> Encoded:
    """`encode`, done once per (tokenizer, texts, labels, max_len) on this node and memory-mapped after."""
    texts, labels = list(texts), np.asarray(labels, dtype=np.int64)
    folder = cache_root() / "encoded" / _key(tokenizer, texts, labels, max_len)
    folder.mkdir(parents=True, exist_ok=True)
    names = ("ids", "lengths", "labels")
    with FileLock(str(folder / ".lock")):
        if not (folder / "labels.npy").is_file():  # written last: its presence means all three are whole
            log.info("encoding %d reviews (max_len %d) into the cache", len(texts), max_len)
            data = encode(tokenizer, texts, labels, max_len)
            for name in names:
                with atomic_path(folder / f"{name}.npy", suffix=".npy") as tmp:
                    np.save(tmp, getattr(data, name))
            return data
    return Encoded(*(np.load(folder / f"{name}.npy", mmap_mode="r") for name in names))


def _key(tokenizer: PreTrainedTokenizerBase, texts: list[str], labels: np.ndarray, max_len: int) -> str:
    digest = hashlib.sha256(f"{CACHE_VERSION}|{max_len}|".encode())
    digest.update(_tokenizer_fingerprint(tokenizer).encode())
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass"))
        digest.update(b"\n")
    digest.update(labels.tobytes())
    return digest.hexdigest()[:24]


def _tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """What decides the ids: the tokenizer's own definition, without the truncation and padding
    settings that each call sets on it (they would make the same tokenizer look new)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return repr(sorted(tokenizer.get_vocab().items()))
    definition = json.loads(backend.to_str())
    definition.pop("truncation", None)
    definition.pop("padding", None)
    return json.dumps(definition, sort_keys=True)


def epoch_batches(data: Encoded, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The batch order of one epoch, a pure function of (seed, epoch) so a resumed run replays it."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(data))
    lengths = np.asarray(data.lengths)
    window = batch_size * BUCKET_BATCHES
    batches = []
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def eval_batches(data: Encoded, batch_size: int) -> list[np.ndarray]:
    """Sorted by length: evaluation order does not matter, padding does."""
    order = np.argsort(np.asarray(data.lengths), kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def bucket_width(longest: int, max_len: int, bucket: int) -> int:
    return min(max_len, -(-int(longest) // bucket) * bucket)


class DeviceSplit:
    """A split as tensors on the run's device; `plan` turns host-side batch rows into (width, rows)
    pairs once per epoch, and `batch` is pure device work."""

    def __init__(self, data: Encoded, device: torch.device):
        self.data, self.device = data, device
        self.ids = torch.from_numpy(np.array(data.ids, dtype=np.int64)).to(device)
        self.lengths = torch.from_numpy(np.array(data.lengths, dtype=np.int64)).to(device)
        self.labels = torch.from_numpy(np.array(data.labels, dtype=np.int64)).to(device)
        self.positions = torch.arange(self.ids.shape[1], device=device)
        self.bucket = BUCKET.get(device.type, 1)

    def __len__(self) -> int:
        return len(self.data)

    def plan(self, batches: list[np.ndarray]) -> list[tuple[int, torch.Tensor]]:
        """Each batch's bucketed width (host) and its rows as a device tensor: one copy for the lot."""
        if not batches:
            return []
        lengths, max_len = np.asarray(self.data.lengths), self.ids.shape[1]
        widths = [bucket_width(lengths[rows].max(), max_len, self.bucket) for rows in batches]
        order = torch.from_numpy(np.concatenate(batches).astype(np.int64)).to(self.device)
        return list(zip(widths, torch.split(order, [len(rows) for rows in batches]), strict=True))

    def batch(self, width: int, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            "input_ids": self.ids.index_select(0, rows)[:, :width],
            "attention_mask": (self.positions[:width] < self.lengths.index_select(0, rows)[:, None]).long(),
            "labels": self.labels.index_select(0, rows),
        }
