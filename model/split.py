"""Which rows of the train file a run trains on, validates on and leaves to the gate.

Split version 2 (every run since issue 47) puts a review in the gate when a salted hash of its text
falls below `data.gate`: membership depends on the review alone, never on the job's validation
share, seed or limit, so no version, whatever its split settings, trains on a review the gate holds
at that fraction or lower; a repeated review lands on one side only. Validation and the `data.limit`
subset are then drawn, stratified and seeded, from the rest. Version 1 (a seeded stratified gate
inside the limited subset) stays readable for experiments recorded before, which carry no version.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from model.config import DataConfig

SPLIT_VERSION = 2
GATE_SALT = b"caviar/gate/v2\x00"  # fixed: changing it moves every review's side


def split_version(cfg: DataConfig) -> int:
    """The version the run used: recorded from version 2 on; a record with fingerprints and no
    version predates it, and a config no run has resolved yet gets today's."""
    if cfg.split is not None:
        return cfg.split
    return 1 if (cfg.fingerprint or cfg.train_fingerprint) else SPLIT_VERSION


def review_keys(texts: pd.Series) -> np.ndarray:
    """Each review's salted sha256 (its stripped text's), 64 bits: its identity, repeats alike."""
    return np.array(
        [int.from_bytes(hashlib.sha256(GATE_SALT + t.strip().encode("utf-8")).digest()[:8], "big") for t in texts],
        dtype=np.uint64,
    )


def gate_draws(keys: np.ndarray) -> np.ndarray:
    """Each review's place in [0, 1), from its key; below `data.gate` is the gate."""
    return (keys >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def stratified_pick(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of n rows keeping the label balance, chosen reproducibly by seed."""
    rng = np.random.default_rng(seed)
    if len(labels) == 0:
        return np.array([], dtype=np.int64)
    picked = []
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        take = round(n * len(rows) / len(labels))
        picked.append(rng.permutation(rows)[:take])
    return np.sort(np.concatenate(picked))


@dataclass(frozen=True)
class Parts:
    """Boolean masks over the train file's rows, disjoint; a row in none of them was left out by data.limit."""

    train: np.ndarray
    val: np.ndarray
    gate: np.ndarray

    @property
    def seen(self) -> np.ndarray:
        """What the run trained on or chose by: a gate must hold none of it."""
        return self.train | self.val


def parts_of(cfg: DataConfig, full: pd.DataFrame, keys: np.ndarray | None = None) -> Parts:
    """The run's parts of the whole train file, by its split version (`keys`: review_keys, if known)."""
    if split_version(cfg) < 2:
        return _seeded(cfg, full)
    return _hashed(cfg, full, review_keys(full.document) if keys is None else keys)


def _hashed(cfg: DataConfig, full: pd.DataFrame, keys: np.ndarray) -> Parts:
    labels = full.label.to_numpy()
    gate = gate_draws(keys) < cfg.gate if cfg.gate > 0 else np.zeros(len(full), dtype=bool)
    rest = np.flatnonzero(~gate)
    if cfg.limit is not None and cfg.limit < len(rest):
        rest = rest[stratified_pick(labels[rest], cfg.limit, cfg.seed)]
    val = np.zeros(len(full), dtype=bool)
    val[rest[stratified_pick(labels[rest], max(2, round(len(rest) * cfg.val_fraction)), cfg.seed + 1)]] = True
    train = np.zeros(len(full), dtype=bool)
    train[rest] = True
    return Parts(train=train & ~val, val=val, gate=gate)


def _seeded(cfg: DataConfig, full: pd.DataFrame) -> Parts:
    """Version 1, row for row: the limited subset, then validation, then the gate from what is left."""
    labels = full.label.to_numpy()
    subset = np.arange(len(full))
    if cfg.limit is not None and cfg.limit < len(full):
        subset = stratified_pick(labels, cfg.limit, cfg.seed)
    sub_labels = labels[subset]
    is_val = np.zeros(len(subset), dtype=bool)
    is_val[stratified_pick(sub_labels, max(2, round(len(subset) * cfg.val_fraction)), cfg.seed + 1)] = True
    is_gate = np.zeros(len(subset), dtype=bool)
    if cfg.gate > 0:
        rest = np.flatnonzero(~is_val)
        n = min(max(2, round(len(subset) * cfg.gate)), len(rest))
        is_gate[rest[stratified_pick(sub_labels[rest], n, cfg.seed + 2)]] = True
    masks = [np.zeros(len(full), dtype=bool) for _ in range(3)]
    for mask, chosen in zip(masks, (~is_val & ~is_gate, is_val, is_gate), strict=True):
        mask[subset[chosen]] = True
    return Parts(*masks)


@dataclass(frozen=True)
class HeldOut:
    """The gate two versions can be compared on: the candidate's gate reviews that no version named
    trained on or validated on (by text, so a repeated review counts as seen)."""

    reviews: pd.DataFrame
    drawn: int  # the candidate's own gate reviews
    seen_before: int  # of those, how many a version (the candidate too) trained on or chose by


def held_out(cfg: DataConfig, full: pd.DataFrame, others: list[DataConfig]) -> HeldOut:
    keys = review_keys(full.document)
    mine = parts_of(cfg, full, keys)
    seen = mine.seen.copy()
    for other in others:
        seen |= parts_of(other, full, keys).seen
    kept = ~np.isin(keys[mine.gate], keys[seen])
    drawn = full[mine.gate]
    return HeldOut(drawn[kept].reset_index(drop=True), drawn=len(drawn), seen_before=int((~kept).sum()))
