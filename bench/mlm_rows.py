"""The MLM step with its output rows padded to ROW_ALIGN against the unpadded step, on real NSMC batches.

To run: NSMC_DIR=../shared/data/nsmc python -m bench.mlm_rows [--rounds 4] [--steps 300] [--precision bf16]

Only the chosen ~15% of tokens go through the vocabulary-sized output layer, so that layer's row
count changes with every batch. On a CPU with AVX-512 BF16/AMX (16-row tiles), a count off the grid
of 16 costs more than the padding does. Both variants run the job's pretraining model
(tune_jobs/nsmc_pretrained.yaml) with all CPUs, as stage 0 does; rounds alternate in one process, on
the same batches and masks in each round. The figure is the median over rounds of the
aligned/unpadded ratio: each round's pair shares batches, masks and the machine's state, while a
median of each variant's own times would mix rounds the machine ran at different speeds.
"""

from __future__ import annotations

import statistics

import torch

from bench.common import JOBS, BenchParser, model_shape, smoke_sets, write_result
from bench.precision import timed_steps
from caviar.job.loading import load_job
from model.batches import epoch_batches
from model.device import available_cpus, set_threads
from model.mlm import ROW_ALIGN, mlm_network, mlm_update
from model.schedule import build_optimizer
from model.train import prepare

VARIANTS = {"unpadded": 1, "aligned": ROW_ALIGN}


def main() -> None:
    parser = BenchParser(__doc__)
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds per variant")
    parser.add_argument("--steps", type=int, default=300, help="steps per round (the first 2 untimed)")
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.steps = 2, 4
    job = load_job(JOBS / "nsmc_pretrained.yaml", ["train.device=cpu", *(smoke_sets() if args.smoke else [])])
    cfg, spec = job.trial_config(), job.pretrain.model_copy(update={"precision": args.precision})
    set_threads(available_cpus())
    run = prepare(cfg)
    net = mlm_network(cfg.model, run.tokenizer).train()
    optimizer = build_optimizer(net, cfg.train)
    batches = run.train_set.plan(epoch_batches(run.train_set.data, spec.batch_size, seed=0, epoch=0))

    def step(align: int, seed: int):
        gen = torch.Generator().manual_seed(seed)  # the same masks for both variants in a round
        return lambda width, rows: mlm_update(
            net, run.train_set.batch(width, rows), run.tokenizer, spec, gen, run.device, optimizer, align
        )

    ms = {name: [] for name in VARIANTS}
    for r in range(args.rounds):
        window = batches[r * args.steps : (r + 1) * args.steps]
        for name in VARIANTS if r % 2 == 0 else list(VARIANTS)[::-1]:
            ms[name].append(timed_steps(step(VARIANTS[name], seed=r), window))
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{n} {v[-1]:.1f} ms" for n, v in ms.items()), flush=True)
    median = {name: statistics.median(v) for name, v in ms.items()}
    ratios = [a / u for a, u in zip(ms["aligned"], ms["unpadded"], strict=True)]
    figures = {
        "model": model_shape(cfg.model),
        "precision": args.precision,
        "threads": available_cpus(),
        "batch_size": spec.batch_size,
        "row_align": ROW_ALIGN,
        "steps_per_round": args.steps,
        "ms_per_step": median,
        "rounds": ms,
        "aligned_over_unpadded_by_round": ratios,
        "aligned_over_unpadded": statistics.median(ratios),
    }
    print(
        f"aligned/unpadded: {figures['aligned_over_unpadded']:.3f} of the step time (median of "
        f"{len(ratios)} paired rounds; range {min(ratios):.3f}-{max(ratios):.3f})"
    )
    write_result(f"mlm_rows_{args.precision}", figures, args.smoke)


if __name__ == "__main__":
    main()
