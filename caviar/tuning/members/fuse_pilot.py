"""`fuse: auto`: a short pilot picks K, the members trained as one stacked model per trial.

To run: caviar tune JOB.yaml with `fuse: auto` in it (the pilot runs before the search; its figures
are printed and kept in the experiment's fuse_pilot.json).

Before the search, the job's own first configurations (those sharing the most common network
shape) train a few steps at K = 1, 2, 4, ...: K = 1 as a plain trial trains (fuse: 1), K > 1 as a
fused group. Each K runs as a Ray task with one trial's resources in a fresh worker process, so it
runs on a trial's device and its peak memory is its own. The K with the highest aggregate
examples/s whose peak memory fits the trial's memory share is chosen (model/device.py's
memory_share_mb: the GPU's memory times resources_per_trial.gpu, or the node's memory times the
trial's share of its CPUs). Doubling stops at the first K that does not fit or is slower in
aggregate than the K before it: past that point more members only cost.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from caviar.job.schema import JobSpec
from caviar.tuning.members.fusion import group_members, sample_members
from caviar.tuning.search.search_space import trial_config
from model.batches import epoch_batches
from model.data import Splits
from model.device import compiles, memory_share_mb, peak_memory_mb
from model.files import write_json_atomically
from model.fit_loop import evaluation_plan
from model.fused import StackedNet, StackedOptimizer, fused_step
from model.loop import train_step
from model.schedule import build_optimizer
from model.train import prepare_members

log = logging.getLogger("caviar.tune")

WARMUP_STEPS, PILOT_STEPS = 3, 8
MAX_FUSE = 64


@dataclass
class PilotRun:
    k: int
    examples_per_s: float  # aggregate: every member sees every example
    peak_mb: float
    share_mb: float  # what one trial may hold
    device: str

    @property
    def fits(self) -> bool:
        return self.peak_mb <= self.share_mb


@dataclass
class FusePilot:
    runs: list[PilotRun]
    chosen: int

    def as_json(self) -> dict:
        return {"chosen": self.chosen, "runs": [{**asdict(r), "fits": r.fits} for r in self.runs]}

    def describe(self) -> str:
        figures = ", ".join(
            f"K={r.k} {r.examples_per_s:,.0f} ex/s {r.peak_mb:,.0f} MB{'' if r.fits else ' (over the share)'}"
            for r in self.runs
        )
        share = self.runs[0].share_mb if self.runs else 0.0
        return f"fuse: auto chose {self.chosen} on {self.runs[0].device} ({figures}; a trial's share {share:,.0f} MB)"


def choose(runs: list[PilotRun]) -> int:
    """The fastest K that fits; 1 when none does (a plain trial, as without fusion)."""
    fitting = [r for r in runs if r.fits]
    return max(fitting, key=lambda r: r.examples_per_s).k if fitting else 1


def candidates(job: JobSpec) -> list[dict]:
    """The members a pilot trains: the most common shape's, in sample order (groups of one shape)."""
    shapes = group_members(sample_members(job), job.num_samples or 1)
    return max(shapes, key=len)


def run_pilot(job: JobSpec, splits: Splits) -> FusePilot:
    """Ray is running. Each K in its own worker (max_calls=1: a fresh process, its own peak)."""
    import ray

    members = candidates(job)
    ks = [k for k in (2**i for i in range(7)) if k <= min(len(members), MAX_FUSE)]
    res = job.resources_per_trial
    task = ray.remote(num_cpus=res.cpu, num_gpus=res.gpu, max_calls=1)(measure)
    base, data, runs = job.trial_base(), ray.put(splits), []
    for k in ks:
        run = PilotRun(**ray.get(task.remote(members[:k], base, data, res.cpu, res.gpu)))
        runs.append(run)
        figures = (run.examples_per_s, run.peak_mb, run.share_mb)
        log.info("fuse pilot: K=%d %.0f examples/s, peak %.0f MB of %.0f MB", k, *figures)
        if not run.fits or (len(runs) > 1 and run.examples_per_s < runs[-2].examples_per_s):
            break
    return FusePilot(runs, choose(runs))


def fuse_chosen(job: JobSpec, splits: Splits, record: Path | None) -> tuple[JobSpec, str]:
    """The job with the pilot's K (stages.fuse_chosen), and the line that says why; the pilot's figures
    are written to `record` (the experiment's fuse_pilot.json) when given."""
    pilot = run_pilot(job, splits)
    line = pilot.describe()  # printed with the outcome's notes; each K's figures were logged as measured
    if record is not None:
        write_json_atomically(record, pilot.as_json())
    return job.with_fuse_chosen(pilot.chosen), line


def measure(members: list[dict], base: dict, splits: Splits, cpus: float, gpus: float) -> dict:
    """Train `members` for a few steps as the search would (K = 1: a plain trial's step; K > 1: one
    fused step for all); aggregate examples/s over the timed steps, and this process's peak memory."""
    import torch

    cfgs = [trial_config(base, params) for params in members]
    for cfg in cfgs:
        cfg.train.num_threads = cfg.train.num_threads or max(1, int(cpus))
    run, nets = prepare_members(cfgs, splits)
    tc, k = cfgs[0].train, len(cfgs)
    plan = evaluation_plan(tc, len(run.train_set))
    if k == 1:
        optimizer = build_optimizer(run.net, tc)

        def step(width, rows):
            train_step(run, width, rows, optimizer, tc.grad_clip, tc.label_smoothing)
    else:
        net = StackedNet(nets, compile=compiles(tc.compile, run.device)).train()
        del nets
        stacked = StackedOptimizer(net, [c.train for c in cfgs], plan.total_steps, plan.steps_per_epoch)

        def step(width, rows):
            fused_step(net, stacked, run.train_set.batch(width, rows), tc.precision)

    batches, epoch = [], 0
    while len(batches) < WARMUP_STEPS + PILOT_STEPS:
        batches += run.train_set.plan(epoch_batches(run.train_set.data, tc.batch_size, tc.seed, epoch))
        epoch += 1
    sync = torch.cuda.synchronize if run.device.type == "cuda" else (lambda: None)
    for width, rows in batches[:WARMUP_STEPS]:
        step(width, rows)
    sync()
    started = time.perf_counter()
    for width, rows in batches[WARMUP_STEPS : WARMUP_STEPS + PILOT_STEPS]:
        step(width, rows)
    sync()
    seconds = time.perf_counter() - started
    return {
        "k": k,
        "examples_per_s": k * tc.batch_size * PILOT_STEPS / seconds,
        "peak_mb": peak_memory_mb(run.device),
        "share_mb": memory_share_mb(run.device, cpus, gpus),
        "device": torch.cuda.get_device_name(run.device) if run.device.type == "cuda" else "cpu",
    }
