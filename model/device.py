"""Where a run computes: the device, its CPU threads and the seeds. Training, evaluation and
prediction all import this; none of them imports another's module for it."""

from __future__ import annotations

import logging
import os
import random
import resource
from pathlib import Path

import numpy as np
import torch

from model.errors import UserError, short
from model.settings import settings

log = logging.getLogger("caviar.train")


def available_cpus() -> int:
    """CPUs this process may use: Ray sets OMP_NUM_THREADS to a trial's share."""
    if (threads := settings().omp_threads) is not None:
        return threads
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


def peak_memory_mb(device: torch.device) -> float:
    """This process's peak memory where it computes: CUDA's allocator peak on a GPU, the process's
    peak resident memory on CPU (Linux reports ru_maxrss in KiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


def memory_share_mb(device: torch.device, cpus: float, gpus: float) -> float:
    """What one trial may hold: its share of the GPU's memory (resources_per_trial.gpu), or on CPU
    the node's memory (its cgroup's limit, where lower) times the trial's share of the CPUs."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory / 2**20 * min(1.0, gpus or 1.0)
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = Path("/sys/fs/cgroup/memory.max")
    if limit.is_file() and (text := limit.read_text().strip()).isdigit():
        total = min(total, int(text))
    return total / 2**20 * min(1.0, cpus / (os.cpu_count() or 1))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def autocast(device: torch.device, precision: str = "auto"):
    """The one place mixed precision is decided. bf16 autocast (fp32 weights, optimizer and loss):
    `auto` turns it on for CUDA only; `bf16` on a CPU with AVX-512 BF16 or AMX runs an MLM step in
    ~2/3 of the fp32 time (bench/precision.py), which pretraining and fine-tuning opt into."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16_on(device, precision))


def bf16_on(device: torch.device, precision: str = "auto") -> bool:
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


COMPILE_BACKEND_ENV = "CAVIAR_COMPILE_BACKEND"  # testing hook: "aot_eager" traces without code generation


def maybe_compile(net: torch.nn.Module, setting: str, device: torch.device) -> torch.nn.Module:
    """The module the steps call: compiled for `on`, and for `auto` on CUDA, where host overhead per
    step is what holds a GPU back; on CPU, `auto` stays eager (a tiny BERT took ~50 s to compile
    here, more than a short trial gains). Shapes are few (bucketed widths), so graphs are reused;
    dynamic=None lets torch fall back to one dynamic graph after the second width instead of one
    graph per width. Checkpoints always save the plain module, which shares the parameters."""
    if not compiles(setting, device):
        return net
    return CompiledOrEager(net)


def compiled(fn):
    """torch.compile(fn), falling back to `fn` itself if compiling fails (EagerIfCompileFails). The
    inductor cache is caviar's own, <CAVIAR_CACHE>/inductor, not the /tmp one every program shares."""
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(settings().cache / "inductor"))
    return EagerIfCompileFails(torch.compile(fn, dynamic=None, backend=settings().compile_backend), fn)


class EagerIfCompileFails:
    """Calls the compiled function; if compiling fails (a kernel left 0 bytes in the cache by a killed
    process, no C++ compiler), one warning line, then the eager function from there on: the run
    goes on at eager speed instead of failing at every compile for good."""

    def __init__(self, compiled_fn, eager_fn):
        self.compiled_fn, self.eager_fn = compiled_fn, eager_fn

    def __call__(self, *args, **kwargs):
        from torch._dynamo.exc import BackendCompilerFailed  # inductor's own errors derive from it

        if self.compiled_fn is not None:
            try:
                return self.compiled_fn(*args, **kwargs)
            except BackendCompilerFailed as err:
                self.compiled_fn = None
                first = next((ln for ln in str(err).splitlines() if ln.strip()), type(err).__name__)
                log.warning("train.compile: compiling failed (%s); this run goes on eagerly", short(first, 200))
        return self.eager_fn(*args, **kwargs)


class CompiledOrEager(torch.nn.Module):
    """`net` as the steps call it: compiled, or eager once compiling failed. train()/eval() reach `net`;
    checkpoints save `net` itself."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net
        self.__dict__["call"] = compiled(net)  # not a submodule: it wraps `net`, already one

    def forward(self, *args, **kwargs):
        return self.__dict__["call"](*args, **kwargs)


def compiles(setting: str, device: torch.device) -> bool:
    """train.compile resolved: `on`, or `auto` on CUDA."""
    return setting == "on" or (setting == "auto" and device.type == "cuda")
