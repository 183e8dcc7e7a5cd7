"""bf16 autocast against fp32 on this machine's CPU: an MLM step and a fine-tuning step, side by side.

To run: NSMC_DIR=../shared/data/nsmc python -m bench.precision [--rounds 3] [--steps 12] [--mlm-steps 300]

Both steps run the job's model (tune_jobs/nsmc_pretrained.yaml: 2 layers, hidden 256, vocab 16k)
on real NSMC train batches. fp32 and bf16 rounds alternate in one process, so the machine's drift
hits both alike; the figure is the ratio of their median ms per step. Threads are what a job gives
each: all CPUs to stage 0's pretraining, one CPU to a fine-tuning trial (`cpu: 1`). Speed alone does
not decide, so a short pretraining run in each precision (same seed, init and batches) shows
whether bf16 changes how far the MLM loss falls.
"""

from __future__ import annotations

import statistics
import time

import torch

from bench.common import JOBS, BenchParser, model_shape, smoke_sets, write_result
from caviar.job.loading import load_job
from model.batches import epoch_batches
from model.config import PretrainConfig, TrialConfig
from model.device import available_cpus, set_threads
from model.loop import train_step
from model.mlm import mlm_network, mlm_update, pretrain
from model.schedule import build_optimizer
from model.train import prepare

PRECISIONS = ("fp32", "bf16")


def timed_steps(step, batches) -> float:
    """ms per step over `batches`, after the first two (allocator and kernel warm-up) untimed."""
    for width, rows in batches[:2]:
        step(width, rows)
    started = time.perf_counter()
    for width, rows in batches[2:]:
        step(width, rows)
    return (time.perf_counter() - started) * 1000 / max(1, len(batches) - 2)


def step_makers(cfg: TrialConfig, spec: PretrainConfig):
    """{kind: (make_step(precision), batches, threads)} for the MLM and the fine-tuning step."""
    run = prepare(cfg)
    mlm_net = mlm_network(cfg.model, run.tokenizer).train()
    mlm_opt = build_optimizer(mlm_net, cfg.train)
    ft_opt = build_optimizer(run.net, cfg.train)
    gen = torch.Generator().manual_seed(0)

    def mlm(precision):
        in_precision = spec.model_copy(update={"precision": precision})
        return lambda width, rows: mlm_update(
            mlm_net, run.train_set.batch(width, rows), run.tokenizer, in_precision, gen, run.device, mlm_opt
        )

    def fine_tune(precision):
        run.precision = precision
        return lambda width, rows: train_step(run, width, rows, ft_opt, cfg.train.grad_clip)

    def batches(size):
        return run.train_set.plan(epoch_batches(run.train_set.data, size, seed=0, epoch=0))

    return {
        "mlm": (mlm, batches(spec.batch_size), available_cpus()),
        "fine_tune": (fine_tune, batches(cfg.train.batch_size), 1),
    }


def step_ratios(cfg: TrialConfig, spec: PretrainConfig, rounds: int, steps: int) -> dict:
    figures = {}
    cpus = available_cpus()
    for kind, (make, batches, threads) in step_makers(cfg, spec).items():
        set_threads(threads)
        ms = {p: [] for p in PRECISIONS}
        for r in range(rounds):
            for precision in PRECISIONS if r % 2 == 0 else PRECISIONS[::-1]:
                window = batches[r * steps : (r + 1) * steps]
                ms[precision].append(timed_steps(make(precision), window))
        median = {p: statistics.median(v) for p, v in ms.items()}
        figures[kind] = {
            "threads": threads,
            "ms_per_step": median,
            "rounds": ms,
            "bf16_over_fp32": median["bf16"] / median["fp32"],
        }
        print(
            f"{kind} ({threads} of {cpus} CPUs): fp32 {median['fp32']:.1f} ms, bf16 {median['bf16']:.1f} ms per step, "
            f"ratio {figures[kind]['bf16_over_fp32']:.3f}"
        )
    set_threads(cpus)
    return figures


def mlm_loss_by_precision(cfg: TrialConfig, spec: PretrainConfig, mlm_steps: int) -> dict:
    """The same short pretraining (seed, init, batches, masks) in each precision: where the loss gets."""
    figures = {}
    for precision in PRECISIONS:
        short = spec.model_copy(
            update={"max_steps": mlm_steps, "log_every": max(1, mlm_steps // 6), "precision": precision}
        )
        started = time.perf_counter()
        result = pretrain(cfg, short)  # seeds init and masks from short.seed: the same in both
        figures[precision] = {
            "steps": result.steps,
            "mlm_loss": result.mlm_loss,
            "wall_s": time.perf_counter() - started,
            "examples_per_s": result.examples_per_s,
        }
        print(
            f"pretrain {precision}: {result.steps} steps, MLM loss {result.mlm_loss:.3f}, "
            f"{result.examples_per_s:.0f} examples/s"
        )
    return figures


def main() -> None:
    parser = BenchParser(__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="alternating fp32/bf16 rounds per step kind")
    parser.add_argument("--steps", type=int, default=12, help="steps per round (the first 2 untimed)")
    parser.add_argument("--mlm-steps", type=int, default=300, help="steps of each short pretraining run")
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.steps, args.mlm_steps = 2, 3, 4
    job = load_job(JOBS / "nsmc_pretrained.yaml", ["train.device=cpu", *(smoke_sets() if args.smoke else [])])
    cfg = job.trial_config()
    figures = {
        "model": model_shape(cfg.model),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "steps": step_ratios(cfg, job.pretrain, args.rounds, args.steps),
        "short_pretraining": mlm_loss_by_precision(cfg, job.pretrain, args.mlm_steps),
    }
    write_result("precision", figures, args.smoke)


if __name__ == "__main__":
    main()
