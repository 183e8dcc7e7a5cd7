"""Where a run computes: the device, its CPU threads and the seeds. Training, evaluation and
prediction all import this; none of them imports another's module for it."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from model.errors import UserError


def available_cpus() -> int:
    """CPUs this process may use: Ray sets OMP_NUM_THREADS to a trial's share."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def set_threads(threads: int | None) -> int:
    """torch's intra-op threads: the given number, else the CPUs this process may use. The one place
    the thread count is set, for training, serving and the LR range test alike."""
    threads = threads or available_cpus()
    torch.set_num_threads(threads)
    return threads


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device: cuda was asked for, but torch sees no CUDA GPU here")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
