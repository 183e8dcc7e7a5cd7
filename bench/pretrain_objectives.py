"""What a pretraining step costs with each objective: masked-LM against ELECTRA, on this machine's CPU.

To run: NSMC_DIR=../shared/data/nsmc python -m bench.pretrain_objectives [--rounds 3] [--steps 12] [--record]
        python -m bench.pretrain_objectives --smoke   (the test fixture, seconds: checks the script runs)

The job's model (tune_jobs/nsmc_pretrained.yaml: 4 layers, hidden 256, vocab 16k) on real NSMC train
batches of pretrain.batch_size, all CPUs, in bf16 (the route's precision) and fp32. MLM and ELECTRA
rounds alternate in one process, so the machine's drift hits both alike; the figure is the ratio of
their median ms per step. ELECTRA's step runs the generator (at pretrain.generator_scale of the
width) and the discriminator over every token: it should cost little more than an MLM step, whose
vocabulary-sized layer ELECTRA runs only in the narrow generator.
"""

from __future__ import annotations

import statistics

import torch

from bench.common import JOBS, BenchParser, model_shape, run_main, smoke_sets, write_result
from bench.precision import timed_steps
from caviar.job.loading import load_job
from model.batches import epoch_batches
from model.config import PretrainConfig, TrialConfig
from model.device import available_cpus, set_threads
from model.electra import ElectraPair, electra_step
from model.mlm import mlm_network, mlm_update, optimizer_step
from model.schedule import build_optimizer
from model.train import prepare

OBJECTIVES = ("mlm", "electra")


def step_of(objective: str, cfg: TrialConfig, spec: PretrainConfig, run):
    """One optimizer step of `objective` on (width, rows), its network built fresh."""
    gen = torch.Generator().manual_seed(0)
    if objective == "mlm":
        net = mlm_network(cfg.model, run.tokenizer).train()
        optimizer = build_optimizer(net, cfg.train)
        return lambda width, rows: mlm_update(
            net, run.train_set.batch(width, rows), run.tokenizer, spec, gen, run.device, optimizer
        )
    pair = ElectraPair(cfg.model, run.tokenizer, spec.generator_scale).train()
    optimizer = build_optimizer(pair, cfg.train)

    def electra(width, rows):
        figures = electra_step(pair, run.train_set.batch(width, rows), run.tokenizer, spec, gen, run.device)
        optimizer_step(pair, figures["loss"], spec, optimizer)

    return electra


def measure(cfg: TrialConfig, spec: PretrainConfig, precision: str, rounds: int, steps: int) -> dict:
    spec = spec.model_copy(update={"precision": precision})
    run = prepare(cfg)
    batches = run.train_set.plan(epoch_batches(run.train_set.data, spec.batch_size, seed=0, epoch=0))
    made = {objective: step_of(objective, cfg, spec, run) for objective in OBJECTIVES}
    ms = {o: [] for o in OBJECTIVES}
    for r in range(rounds):
        for objective in OBJECTIVES if r % 2 == 0 else OBJECTIVES[::-1]:
            ms[objective].append(timed_steps(made[objective], batches[r * steps : (r + 1) * steps]))
    median = {o: statistics.median(v) for o, v in ms.items()}
    out = {
        o: {"ms_per_step": median[o], "examples_per_s": spec.batch_size * 1000 / median[o], "rounds_ms": ms[o]}
        for o in OBJECTIVES
    }
    out["electra_over_mlm"] = median["electra"] / median["mlm"]
    print(
        f"{precision}: MLM {median['mlm']:.0f} ms/step ({out['mlm']['examples_per_s']:.0f} ex/s), "
        f"ELECTRA {median['electra']:.0f} ms/step ({out['electra']['examples_per_s']:.0f} ex/s), "
        f"ratio {out['electra_over_mlm']:.3f}",
        flush=True,
    )
    return out


def main() -> None:
    parser = BenchParser(__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="alternating MLM/ELECTRA rounds per precision")
    parser.add_argument("--steps", type=int, default=12, help="steps per round (the first 2 untimed)")
    args = parser.parse_args()
    overrides = ["train.device=cpu"]
    if args.smoke:
        args.rounds, args.steps = 2, 3
        overrides += smoke_sets()
    job = load_job(JOBS / "nsmc_pretrained.yaml", overrides)
    cfg = job.trial_config()
    set_threads(available_cpus())
    figures = {
        "job": "tune_jobs/nsmc_pretrained.yaml",
        "model": model_shape(cfg.model),
        "batch_size": job.pretrain.batch_size,
        "generator_scale": job.pretrain.generator_scale,
        "threads": available_cpus(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "precisions": {p: measure(cfg, job.pretrain, p, args.rounds, args.steps) for p in ("bf16", "fp32")},
    }
    write_result("pretrain_objectives", figures, args.smoke)


if __name__ == "__main__":
    run_main(main, "bench.pretrain_objectives")
