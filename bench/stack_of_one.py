"""A single trial as a fused stack of one: what it would cost to train every trial through
model/fused.py's StackedNet (K = 1) instead of model/loop.py's plain step (issue 50, item 1).

To run: NSMC_DIR=/path/to/nsmc python -m bench.stack_of_one [--steps 60] [--record]
        python -m bench.stack_of_one --smoke   (the test fixture, seconds: checks the script runs)

For the tiny model (hidden 32) and the default one (2 layers, hidden 256), one configuration trains
the same steps on the same batches from the same initial weights, twice in one process with 1 thread:
the plain step (the yardstick) and the stacked step with K = 1. Figures: ms per step (the median of
the timed steps after a warm-up), the stack's ratio to the plain step, and how far the two runs'
losses are apart after the last step (the stacked AdamW is caviar's own arithmetic, not torch's).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from bench.common import BenchParser, bench_job, run_main, write_result
from bench.fused import MODELS
from caviar.tuning.pipeline import resolve
from model.batches import epoch_batches
from model.fit_loop import evaluation_plan
from model.fused import StackedNet, StackedOptimizer, fused_step
from model.loop import train_step
from model.schedule import build_optimizer, build_schedule
from model.train import prepare

WARMUP = 5  # first steps: allocation and autograd's caches, left out of the timing


def plain_run(cfg, splits, batches) -> tuple[list[float], list[float]]:
    """Today's single trial: model/loop.py's train_step; (seconds per step, losses)."""
    run = prepare(cfg, splits)
    plan = evaluation_plan(cfg.train, len(run.train_set))
    optimizer = build_optimizer(run.net, cfg.train)
    schedule = build_schedule(optimizer, cfg.train, plan.total_steps, plan.steps_per_epoch)
    seconds, losses = [], []
    for width, rows in batches:
        started = time.perf_counter()
        loss = float(train_step(run, width, rows, optimizer, cfg.train.grad_clip, cfg.train.label_smoothing))
        schedule.step()
        seconds.append(time.perf_counter() - started)
        losses.append(loss)
    return seconds, losses


def stacked_run(cfg, splits, batches) -> tuple[list[float], list[float]]:
    """The same configuration as a fused group of one member."""
    run = prepare(cfg, splits)  # the same seed: the same initial weights
    plan = evaluation_plan(cfg.train, len(run.train_set))
    net = StackedNet([run.net]).train()
    optimizer = StackedOptimizer(net, [cfg.train], plan.total_steps, plan.steps_per_epoch)
    seconds, losses = [], []
    for width, rows in batches:
        started = time.perf_counter()
        loss = float(fused_step(net, optimizer, run.train_set.batch(width, rows))[0])
        seconds.append(time.perf_counter() - started)
        losses.append(loss)
    return seconds, losses


def compare(raw: dict) -> dict:
    resolved = resolve(bench_job(raw, Path(tempfile.gettempdir())))
    cfg = resolved.job.trial_config()
    probe = prepare(cfg, resolved.splits)
    plan = evaluation_plan(cfg.train, len(probe.train_set))
    data = probe.train_set
    batches = data.plan(epoch_batches(data.data, cfg.train.batch_size, cfg.train.seed, 0)[: plan.total_steps])
    del probe
    plain_s, plain_loss = plain_run(cfg, resolved.splits, batches)
    stacked_s, stacked_loss = stacked_run(cfg, resolved.splits, batches)
    plain_ms = 1000 * statistics.median(plain_s[WARMUP:] or plain_s)
    stacked_ms = 1000 * statistics.median(stacked_s[WARMUP:] or stacked_s)
    return {
        "steps": len(batches),
        "plain_ms_per_step": plain_ms,
        "stacked_ms_per_step": stacked_ms,
        "stacked_over_plain": stacked_ms / plain_ms,
        "first_loss": {"plain": plain_loss[0], "stacked": stacked_loss[0]},
        "last_loss": {"plain": plain_loss[-1], "stacked": stacked_loss[-1]},
        "last_loss_gap": abs(plain_loss[-1] - stacked_loss[-1]),
    }


def main() -> None:
    parser = BenchParser(__doc__)
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per run (the tiny model: 10x)")
    parser.add_argument("--limit", type=int, default=20000, help="train-file reviews (stratified)")
    args = parser.parse_args()
    data = {"limit": args.limit, "test_limit": 1000}
    if args.smoke:
        data = {"dir": str(Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "nsmc"), "val_fraction": 0.2}
    figures = {"models": {}}
    for name, model in MODELS.items():
        steps = 8 if args.smoke else args.steps * (10 if name == "tiny" else 1)
        if args.smoke:
            model = {**model, "vocab_size": 300, "max_len": 32}
        train = {"max_steps": steps, "epochs": 1, "eval_every": 1.0, "num_threads": 1, "seed": 5, "lr": 1e-3}
        figures["models"][name] = compare({"name": "bench-stack-of-one", "data": data, "model": model, "train": train})
        print(f"{name}: {figures['models'][name]}", flush=True)
    write_result("stack_of_one", figures, args.smoke)


if __name__ == "__main__":
    run_main(main, "bench.stack_of_one")
