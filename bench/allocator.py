"""Speed and resident memory of stage 0 (MLM pretraining) on glibc's malloc and on jemalloc.

To run: NSMC_DIR=../shared/data/nsmc python -m bench.allocator [--steps 3000] [--rounds 2] [--set model.layers=4]

A pretraining step allocates tensors of a different size every time (batch widths and masked-row
counts vary); glibc's malloc keeps the freed pieces in fragmented heaps, so the process grows and
each step slows. caviar.ops.allocator restarts the `caviar` command on jemalloc with the MALLOC_CONF
it names, and each process that trains returns its idle pages on a timer (purge_on_a_timer). The
variants: glibc (the yardstick), jemalloc's defaults, purging off, decay only (caviar's MALLOC_CONF
without the timer) and jemalloc as caviar runs it (with the timer). Each runs the job's stage 0
(tune_jobs/nsmc_pretrained.yaml, all CPUs, with the --set overrides) for the same steps in a fresh
process, since an allocator is chosen at process start; rounds alternate the order. Speed is
glibc's seconds over the variant's across the same steps in the same round (the machine drifts
between rounds more than between neighbours). jemalloc with purging off stayed flat for 700-2,000
4-layer steps and then grew without end: run 3,000 steps to see it. Needs jemalloc installed
(`apt install libjemalloc2`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

from bench.common import JOBS, BenchParser, model_shape, peak_rss_gb, rss_gb, run_main, smoke_sets, write_result
from caviar.job.loading import load_job
from caviar.ops.allocator import MALLOC_CONF, PURGE_EVERY_S, find_jemalloc, loaded_allocator, purge_on_a_timer
from model.data import load_splits
from model.device import available_cpus
from model.mlm import pretrain

JOB = JOBS / "nsmc_pretrained.yaml"
LOG_EVERY = 50
PRELOAD_KEYS = ("LD_PRELOAD", "MALLOC_CONF", "CAVIAR_ALLOCATOR")


class Jemalloc(NamedTuple):
    conf: str | None  # MALLOC_CONF; None: jemalloc's own defaults
    timer: bool = False  # the run calls purge_on_a_timer, as caviar's training processes do


JEMALLOC_VARIANTS = {
    "jemalloc_defaults": Jemalloc(None),
    "jemalloc_purging_off": Jemalloc("dirty_decay_ms:-1,muzzy_decay_ms:-1"),  # grew without end
    "jemalloc_decay_only": Jemalloc(MALLOC_CONF),  # caviar's setting before the timer
    "jemalloc_as_caviar_runs_it": Jemalloc(MALLOC_CONF, timer=True),
}


def timed(name: str) -> bool:
    return name in JEMALLOC_VARIANTS and JEMALLOC_VARIANTS[name].timer


def variants(chosen: list[str]) -> dict[str, dict[str, str]]:
    """Environment per chosen variant: glibc, or jemalloc with one MALLOC_CONF."""
    library = find_jemalloc()
    if library is None:
        raise SystemExit(
            "bench.allocator: jemalloc is not installed (apt install libjemalloc2, or set CAVIAR_JEMALLOC)"
        )
    clean = {k: v for k, v in os.environ.items() if k not in PRELOAD_KEYS}
    envs = {"glibc": clean}
    for name, variant in JEMALLOC_VARIANTS.items():
        envs[name] = {**clean, "LD_PRELOAD": library, **({"MALLOC_CONF": variant.conf} if variant.conf else {})}
    return {name: envs[name] for name in chosen}


def chosen_variants(text: str) -> list[str]:
    chosen = text.split(",")
    if chosen[0] != "glibc" or not set(chosen) <= {"glibc", *JEMALLOC_VARIANTS}:
        names = ", ".join(JEMALLOC_VARIANTS)
        raise SystemExit(f"bench.allocator: --variants {text}: glibc first (the yardstick), then any of {names}")
    return chosen


class OverCap(Exception):
    """Resident memory passed --rss-cap-gib: the run stops there, so that a variant that grows
    without end is measured up to that point instead of taking the machine down with it."""


def child(steps: int, overrides: list[str], cap_gib: float, timer: bool) -> None:
    """One pretraining run; prints one JSON line with its speed and memory."""
    if timer:
        purge_on_a_timer()

    threads = f"train.num_threads={available_cpus()}"  # all CPUs, as stage 0 runs
    job = load_job(JOB, ["train.device=cpu", threads, *overrides])
    cfg = job.trial_config()
    spec = job.pretrain.model_copy(update={"max_steps": steps, "log_every": min(LOG_EVERY, max(1, steps // 4))})
    splits = load_splits(cfg.data)
    curve, started = [], time.perf_counter()

    def on_log(point: dict) -> None:
        rss = rss_gb()
        curve.append((point["step"], round(rss, 3), round(time.perf_counter() - started, 2)))
        if rss > cap_gib:
            raise OverCap

    before = rss_gb()
    try:
        out, stopped = pretrain(cfg, spec, splits, on_log=on_log), None
    except OverCap:
        out, stopped = None, curve[-1][0]
    record = {
        "allocator": loaded_allocator(),
        "examples_per_s": out.examples_per_s if out else None,
        "mlm_loss": out.mlm_loss if out else None,
        "stopped_over_cap_at_step": stopped,
        "rss_before_gib": before,
        "rss_end_gib": rss_gb(),
        "peak_rss_gib": peak_rss_gb(),
        "rss_by_step_gib": [(step, rss) for step, rss, _ in curve],
        "seconds_by_step": [(step, seconds) for step, _, seconds in curve],
    }
    print(json.dumps(record))


def run_child(steps: int, overrides: list[str], cap_gib: float, env: dict[str, str], timer: bool = False) -> dict:
    cmd = [sys.executable, "-m", "bench.allocator", "--child", "--steps", str(steps), "--rss-cap-gib", str(cap_gib)]
    cmd += ["--timer"] if timer else []
    cmd += [arg for override in overrides for arg in ("--set", override)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"bench.allocator: a run failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def speed_vs(run: dict, yardstick: dict) -> float | None:
    """The yardstick's seconds over `run`'s between the first logged step and the last one `run`
    reached: the same steps for both, also when `run` stopped at the memory cap (None: it stopped
    at its first logged step, or the yardstick itself stopped at the cap)."""
    first, last = run["seconds_by_step"][0], run["seconds_by_step"][-1]
    if last[0] == first[0] or yardstick["stopped_over_cap_at_step"]:
        return None
    theirs = dict(yardstick["seconds_by_step"])
    return (theirs[last[0]] - theirs[first[0]]) / (last[1] - first[1])


def main() -> None:
    parser = BenchParser(__doc__)
    parser.add_argument("--steps", type=int, default=500, help="pretraining steps per run")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of every variant")
    parser.add_argument("--set", action="append", default=[], help="override a job value, e.g. model.layers=4")
    parser.add_argument(
        "--variants",
        default=",".join(["glibc", *JEMALLOC_VARIANTS]),
        help="comma-separated, glibc first (the yardstick)",
    )
    parser.add_argument("--rss-cap-gib", type=float, default=12.0, help="stop a run whose memory passes this")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--timer", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.steps, args.set, args.rss_cap_gib, args.timer)
    if args.smoke:
        args.rounds, args.steps, args.set = 1, 12, [*args.set, *smoke_sets()]
        args.variants = "glibc,jemalloc_as_caviar_runs_it"  # the yardstick and caviar's own setting

    shape = model_shape(load_job(JOB, args.set).model)  # a wrong --set: one line now, not in a child's traceback
    envs = variants(chosen_variants(args.variants))
    run_child(2, args.set, args.rss_cap_gib, envs["glibc"])  # tokenizer and encoded split cached: no variant pays
    runs = {name: [] for name in envs}
    for r in range(args.rounds):
        for name in envs if r % 2 == 0 else list(envs)[::-1]:
            runs[name].append(run_child(args.steps, args.set, args.rss_cap_gib, envs[name], timed(name)))
            last = runs[name][-1]
            stopped = last["stopped_over_cap_at_step"]
            print(
                f"round {r + 1}/{args.rounds} {name} (on {last['allocator']}): peak {last['peak_rss_gib']:.2f} GiB, "
                + (f"stopped over {args.rss_cap_gib} GiB at step {stopped}" if stopped else "all steps run"),
                flush=True,
            )
    figures = {
        "steps": args.steps,
        "rounds": args.rounds,
        "set": args.set,
        "rss_cap_gib": args.rss_cap_gib,
        "caviar_runs": MALLOC_CONF,
        "caviar_purges_every_s": PURGE_EVERY_S,
        "variants": {},
    }
    for name, done in runs.items():
        ratios = [speed_vs(v, g) for v, g in zip(done, runs["glibc"], strict=True)]
        measured = [r for r in ratios if r is not None]
        figures["variants"][name] = {
            "env": {k: Path(v).name if k == "LD_PRELOAD" else v for k, v in envs[name].items() if k in PRELOAD_KEYS},
            "purge_on_a_timer": timed(name),
            "peak_rss_gib": max(v["peak_rss_gib"] for v in done),
            "speed_vs_glibc": statistics.median(measured) if measured else None,
            "speed_vs_glibc_by_round": ratios,
            "runs": done,
        }
        print(
            f"{name}: peak {figures['variants'][name]['peak_rss_gib']:.2f} GiB, speed "
            + (f"{statistics.median(measured):.3f}" if measured else "not comparable")
            + f" of glibc's over the same steps (median of {len(measured)} rounds)"
        )
    figures["model"] = shape
    write_result("allocator", figures, args.smoke)


if __name__ == "__main__":
    run_main(main, "bench.allocator")
