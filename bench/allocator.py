"""Speed and resident memory of stage 0 (MLM pretraining) on glibc's malloc and on jemalloc.

To run: NSMC_DIR=../shared/data/nsmc python -m bench.allocator [--steps 500] [--rounds 2]

A pretraining step allocates tensors of a different size every time (batch widths and masked-row
counts vary); glibc's malloc keeps the freed pieces in fragmented heaps, so the process grows and
each step slows. caviar.allocator restarts the `caviar` command on jemalloc with purging off. Each
variant runs the job's stage 0 (tune_jobs/nsmc_pretrained.yaml, all CPUs) for the same steps in a
fresh process, since an allocator is chosen at process start; rounds alternate the order. Speed is
each variant's examples/s over glibc's in the same round (the machine drifts between rounds more
than between neighbours). Needs jemalloc installed (`apt install libjemalloc2`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from bench.common import model_shape, peak_rss_gb, rss_gb, write_result
from caviar.allocator import find_jemalloc, jemalloc_env, loaded_allocator

JOB = Path("tune_jobs/nsmc_pretrained.yaml")
LOG_EVERY = 50
PRELOAD_KEYS = ("LD_PRELOAD", "MALLOC_CONF")


def variants() -> dict[str, dict[str, str]]:
    """Environment per variant: glibc, jemalloc with its own defaults, and jemalloc as caviar runs it."""
    library = find_jemalloc()
    if library is None:
        raise SystemExit(
            "bench.allocator: jemalloc is not installed (apt install libjemalloc2, or set CAVIAR_JEMALLOC)"
        )
    clean = {k: v for k, v in os.environ.items() if k not in PRELOAD_KEYS}
    return {
        "glibc": clean,
        "jemalloc_defaults": {**clean, "LD_PRELOAD": library},
        "jemalloc_as_caviar_runs_it": jemalloc_env(clean),
    }


def child(steps: int) -> None:
    """One pretraining run; prints one JSON line with its speed and memory."""
    from caviar.jobfile import load_job
    from model.data import load_splits
    from model.device import available_cpus
    from model.pretrain import pretrain

    threads = f"train.num_threads={available_cpus()}"  # all CPUs, as stage 0 runs
    job = load_job(JOB, ["train.device=cpu", threads])
    cfg = job.trial_config()
    spec = job.pretrain.model_copy(update={"max_steps": steps, "log_every": min(LOG_EVERY, steps)})
    splits = load_splits(cfg.data)
    curve = []
    before = rss_gb()
    out = pretrain(cfg, spec, splits, on_log=lambda point: curve.append((point["step"], round(rss_gb(), 3))))
    record = {
        "allocator": loaded_allocator(),
        "examples_per_s": out.examples_per_s,
        "mlm_loss": out.mlm_loss,
        "rss_before_gib": before,
        "rss_end_gib": rss_gb(),
        "peak_rss_gib": peak_rss_gb(),
        "rss_by_step_gib": curve,
    }
    print(json.dumps(record))


def run_child(steps: int, env: dict[str, str]) -> dict:
    cmd = [sys.executable, "-m", "bench.allocator", "--child", "--steps", str(steps)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"bench.allocator: a run failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500, help="pretraining steps per run")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of every variant")
    parser.add_argument("--smoke", action="store_true", help="a few steps, not written to bench/results")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.steps)
    if args.smoke:
        args.rounds, args.steps = 1, 4
    envs = variants()
    run_child(2, envs["glibc"])  # tokenizer and encoded split into the cache: no variant pays for them
    runs = {name: [] for name in envs}
    for r in range(args.rounds):
        for name in envs if r % 2 == 0 else list(envs)[::-1]:
            runs[name].append(run_child(args.steps, envs[name]))
            last = runs[name][-1]
            print(
                f"round {r + 1}/{args.rounds} {name} (on {last['allocator']}): {last['examples_per_s']:.0f} ex/s, peak "
                f"{last['peak_rss_gib']:.2f} GiB, end {last['rss_end_gib']:.2f} GiB",
                flush=True,
            )
    figures = {"steps": args.steps, "rounds": args.rounds, "variants": {}}
    for name, done in runs.items():
        ratios = [v["examples_per_s"] / g["examples_per_s"] for v, g in zip(done, runs["glibc"], strict=True)]
        figures["variants"][name] = {
            "env": {k: Path(v).name if k == "LD_PRELOAD" else v for k, v in envs[name].items() if k in PRELOAD_KEYS},
            "peak_rss_gib": max(v["peak_rss_gib"] for v in done),
            "speed_vs_glibc": statistics.median(ratios),
            "speed_vs_glibc_by_round": ratios,
            "runs": done,
        }
        print(
            f"{name}: peak {figures['variants'][name]['peak_rss_gib']:.2f} GiB, examples/s "
            f"{statistics.median(ratios):.3f} of glibc's (median of {len(ratios)} rounds)"
        )
    if args.smoke:
        print("smoke run: figures not written")
        return
    from caviar.jobfile import load_job

    figures["model"] = model_shape(load_job(JOB, []).model)
    write_result("allocator", figures)


if __name__ == "__main__":
    main()
