"""Fused trials on CPU: 8 configurations as 8 Ray trials 2 at a time (today's way) against fused
groups of K = 2, 4 and 8, for the tiny model (hidden 32) and the default one (2 layers, hidden 256).

To run: NSMC_DIR=/path/to/nsmc python -m bench.fused [--steps 60] [--record]
        (ASHA over fused members against ASHA over trials: bench/fused_asha.py)
        python -m bench.fused --smoke   (the test fixture, seconds: checks the script runs)

Each of the 8 configurations (lr x weight decay) trains the same number of steps on the same
batches. Figures: aggregate training examples/s (every member's examples over the seconds spent in
training steps), wall time to the same steps (set-up included), and peak RSS (Ray's worker
processes sampled every 0.2 s; each fused phase runs in a process of its own). Target: fused
aggregate >= 0.9x today's way, for both models. Beside it, vmap over functional_call against a
loop of K functional calls on the same stacked weights, and SDPA attention against eager under vmap.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from bench.common import BenchParser, bench_job, peak_rss_gb, run_main, write_result
from caviar.experiment.record import load_trials
from caviar.tuning.pipeline import resolve, tune_job
from caviar.tuning.search.search_space import trial_config
from model.batches import epoch_batches
from model.fit_loop import evaluation_plan
from model.fused import StackedNet, StackedOptimizer, fused_step
from model.train import prepare

MODELS = {
    "tiny": {"vocab_size": 8000, "layers": 1, "hidden": 32, "heads": 2, "intermediate": 64, "max_len": 64},
    "default": {"vocab_size": 16000, "layers": 2, "hidden": 256, "heads": 4, "intermediate": 1024, "max_len": 128},
}
CONFIGS = [{"train.lr": lr, "train.weight_decay": wd} for lr in (3e-4, 1e-3, 3e-3, 1e-2) for wd in (0.0, 0.05)]
KS = (2, 4, 8)


def base_job(model: dict, steps: int, data: dict) -> dict:
    return {
        "name": "bench-fused",
        "data": data,
        "model": model,
        "train": {"max_steps": steps, "epochs": 1, "eval_every": 1.0, "num_threads": 1, "seed": 5},
    }


def fused_phase(raw: dict, k: int, part: int, parts: int, threads: int) -> dict:
    """This process's share of the fused groups of k (every `parts`-th, from `part`), in turn."""
    started = time.perf_counter()
    resolved = resolve(bench_job(raw, Path(tempfile.gettempdir())))
    base = resolved.job.trial_config().model_dump()
    train_s, examples = 0.0, 0
    for first in list(range(0, len(CONFIGS), k))[part::parts]:
        cfgs = [trial_config(base, params) for params in CONFIGS[first : first + k]]
        for cfg in cfgs:
            cfg.train.num_threads = threads
        runs = [prepare(cfg, resolved.splits) for cfg in cfgs]
        net = StackedNet([r.net for r in runs]).train()
        data, tc = runs[0].train_set, cfgs[0].train
        plan = evaluation_plan(tc, len(data))
        optimizer = StackedOptimizer(net, [c.train for c in cfgs], plan.total_steps, plan.steps_per_epoch)
        batches = data.plan(epoch_batches(data.data, tc.batch_size, tc.seed, 0)[: plan.total_steps])
        step_started = time.perf_counter()
        for width, rows in batches:
            fused_step(net, optimizer, data.batch(width, rows))
        train_s += time.perf_counter() - step_started
        examples += sum(len(rows) for _, rows in batches) * len(cfgs)
    return {
        "examples_per_s": examples / train_s,
        "wall_s": time.perf_counter() - started,
        "peak_rss_gb": peak_rss_gb(),
        "device": str(runs[0].device),
        "forward": net.how(runs[0].device),
    }


def fused_groups_on_2_cpus(name: str, k: int, args) -> dict:
    """Groups 2 at a time, a process of 1 thread each, as `fuse: k` runs them on this machine
    (a single group gets both CPUs); aggregate = the concurrent processes' rates summed."""
    parts = min(2, -(-len(CONFIGS) // k))
    started = time.perf_counter()
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.fused",
                "--phase",
                f"{name}:{k}:{part}:{parts}:{2 // parts}",
                "--steps",
                str(args.steps),
                "--limit",
                str(args.limit),
                *(["--smoke"] if args.smoke else []),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for part in range(parts)
    ]
    outs = [json.loads(child.communicate()[0].strip().splitlines()[-1]) for child in children]
    if any(child.returncode for child in children):
        raise RuntimeError(f"a fused phase of {name}, k={k} failed")
    return {
        "examples_per_s": sum(o["examples_per_s"] for o in outs),
        "wall_s": time.perf_counter() - started,
        "peak_rss_gb": sum(o["peak_rss_gb"] for o in outs),
        "processes": parts,
        "threads_each": 2 // parts,
        "forward": outs[0]["forward"],
    }


def ray_phase(raw: dict) -> dict:
    """Today's way: 8 trials (one configuration each), 2 at a time, each on 1 CPU."""
    space = {key: {"grid": sorted({c[key] for c in CONFIGS})} for key in CONFIGS[0]}
    with tempfile.TemporaryDirectory() as tmp:
        job = bench_job(
            {**raw, "search_space": space, "search": "grid", "num_samples": 1, "max_concurrent_trials": 2,
             "scheduler": {"type": "fifo"}, "resources_per_trial": {"cpu": 1}}, Path(tmp)
        )  # fmt: skip
        peak, stop = [0.0], threading.Event()
        sampler = threading.Thread(target=_sample_ray_rss, args=(peak, stop), daemon=True)
        sampler.start()
        started = time.perf_counter()
        outcome = tune_job(job)
        wall = time.perf_counter() - started
        stop.set()
        sampler.join()
        rates = [float(t.history["examples_per_s"].iloc[-1]) for t in load_trials(Path(outcome.experiment_dir))]
    return {"examples_per_s": 2 * sum(rates) / len(rates), "wall_s": wall, "peak_rss_gb": peak[0], "trials": len(rates)}


def _sample_ray_rss(peak: list[float], stop: threading.Event) -> None:
    """The summed RSS of Ray's worker processes (named ray::...), from /proc, every 0.2 s."""
    page = os.sysconf("SC_PAGE_SIZE")
    while not stop.wait(0.2):
        total = 0
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                if (proc / "cmdline").read_bytes().startswith(b"ray::"):
                    total += int((proc / "statm").read_text().split()[1]) * page
            except OSError:
                continue  # gone meanwhile
        peak[0] = max(peak[0], total / 2**30)


def vmap_against_loop(raw: dict, k: int, threads: int, repeats: int = 5) -> dict:
    """Forward and backward of k stacked members: vmap over functional_call against a loop over the
    members' slices (StackedNet's two ways), each with SDPA attention and with eager attention
    (vmap has no batching rule for SDPA's CPU kernel and runs it member by member)."""
    torch.set_num_threads(threads)
    resolved = resolve(bench_job(raw, Path(tempfile.gettempdir())))
    runs = [prepare(resolved.job.trial_config(), resolved.splits) for _ in range(k)]
    data = runs[0].train_set
    width, rows = data.plan(epoch_batches(data.data, 64, 0, 0))[0]
    batch = data.batch(width, rows)
    timings = {}
    for attention in ("sdpa", "eager"):
        for run in runs:
            run.net.config._attn_implementation = attention
        for how in ("vmap", "loop"):
            net = StackedNet([r.net for r in runs], how).train()
            net.logits(batch["input_ids"], batch["attention_mask"]).sum().backward()  # warm-up
            started = time.perf_counter()
            for _ in range(repeats):
                net.logits(batch["input_ids"], batch["attention_mask"]).sum().backward()
            timings[f"{how}_{attention}_ms"] = (time.perf_counter() - started) / repeats * 1000
    return timings


def main() -> None:
    parser = BenchParser(__doc__)
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per configuration (the tiny model: 10x)")
    parser.add_argument("--limit", type=int, default=20000, help="train-file reviews (stratified)")
    parser.add_argument("--phase", help=argparse_hidden())
    args = parser.parse_args()
    data = {"limit": args.limit, "test_limit": 1000}
    if args.smoke:
        data = {"dir": str(Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "nsmc"), "val_fraction": 0.2}
    if args.phase:  # a child process: its share of one fused phase, its figures as one JSON line
        model, k, part, parts, threads = args.phase.split(":")
        raw = base_job(_model(model, args.smoke), _steps(model, args), data)
        print(json.dumps(fused_phase(raw, int(k), int(part), int(parts), int(threads))))
        return
    figures = {"steps": {name: _steps(name, args) for name in MODELS}, "configurations": len(CONFIGS), "models": {}}
    for name in ["tiny"] if args.smoke else MODELS:  # --smoke: one model and one K, the whole script
        raw = base_job(_model(name, args.smoke), _steps(name, args), data)
        today = ray_phase(raw)
        print(f"{name} today's way: {today}", flush=True)
        fused = {}
        for k in KS[:1] if args.smoke else KS:
            fused[f"k{k}"] = fused_groups_on_2_cpus(name, k, args)
            fused[f"k{k}"]["ratio_to_today"] = fused[f"k{k}"]["examples_per_s"] / today["examples_per_s"]
            print(f"{name} fused k={k}: {fused[f'k{k}']}", flush=True)
        figures["models"][name] = {
            "today_8_ray_trials_2_at_a_time": today,
            "fused": fused,
            "best_ratio": max(f["ratio_to_today"] for f in fused.values()),
            "target": ">= 0.9",
            "met": max(f["ratio_to_today"] for f in fused.values()) >= 0.9,
            "vmap_vs_loop_k4_2_threads": vmap_against_loop(raw, 4, 2),
        }
    write_result("fused", figures, args.smoke)


def _steps(name: str, args) -> int:
    """The tiny model's steps take ~1 ms: ten times as many, so each phase times seconds, not noise."""
    return args.steps * (10 if name == "tiny" and not args.smoke else 1)


def _model(name: str, smoke: bool) -> dict:
    return {**MODELS[name], "vocab_size": 300, "max_len": 32} if smoke else MODELS[name]


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    run_main(main, "bench.fused")
