"""A training step's host work, the old data path against the new one, side by side in one process.

To run: NSMC_DIR=/path/to/nsmc python -m bench.step_overhead [--steps 60] [--subset 20000]
        python -m bench.step_overhead --smoke   (the test fixture, tiny shapes: checks the script runs)

The old path (kept below as the yardstick, as it was before the encoded-split change): a Python loop
builds each batch from per-review token lists, pads it to its exact longest review, copies it to
the device, reads the loss back every step, and updates the weights with torch's per-parameter
AdamW loop (the default on CPU). The new path: a batch is an index_select on the split's padded
tensor (widths bucketed as model.batches.BUCKET says for the device), the loss summed on the
device, the AdamW update fused (model.schedule.build_optimizer). Both run the same model and
batches; the figures are ms per step and aten operations per step (torch.profiler), for the
default model and for a tiny one (hidden 32), where host work dominates. A third line times the
model's forward and backward alone on the same batches (measured first, before either path updates
the weights): the floor that no step work can go below. A fourth runs the new step again with
`train.compile: on`, after one untimed pass over the batches that compiles every width. Runs on
this machine vary by up to a third, so compare ratios across several runs.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from bench.common import FIXTURE_DATA, SMOKE_MODEL, BenchParser, write_result
from model.batches import epoch_batches
from model.config import TrialConfig
from model.device import maybe_compile
from model.evaluate import cross_entropy
from model.loop import train_step
from model.schedule import build_optimizer, parameter_groups
from model.train import prepare

MODELS = {
    "default": {},
    "tiny": {"hidden": 32, "heads": 2, "intermediate": 64, "layers": 1},
}


def old_collate(ids: list[list[int]], labels: np.ndarray, rows: np.ndarray, pad_id: int) -> dict:
    lengths = torch.tensor([len(ids[r]) for r in rows])
    input_ids = torch.full((len(rows), int(lengths.max())), pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, : lengths[i]] = torch.as_tensor(ids[r])
    return {
        "input_ids": input_ids,
        "attention_mask": (torch.arange(input_ids.shape[1]) < lengths[:, None]).long(),
        "labels": torch.as_tensor(labels[rows]),
    }


def old_step(run, ids, labels, rows, optimizer) -> float:
    batch = {k: v.to(run.device) for k, v in old_collate(ids, labels, rows, run.tokenizer.pad_token_id).items()}
    logits = run.net(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    loss = cross_entropy(logits, batch["labels"])
    loss.backward()
    torch.nn.utils.clip_grad_norm_(run.net.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def old_optimizer(net: torch.nn.Module, cfg) -> torch.optim.Optimizer:
    """AdamW as the old path built it: the same groups and settings, torch's default (unfused) update."""
    groups = parameter_groups(net, cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=cfg.effective_lr(), betas=cfg.betas, eps=cfg.eps)


def model_only_step(run, width: int, rows: torch.Tensor) -> None:
    """The floor under any step: the model's forward and backward alone, with no clip and no update."""
    batch = run.train_set.batch(width, rows)
    logits = run.step_net(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    cross_entropy(logits, batch["labels"]).backward()
    run.net.zero_grad(set_to_none=True)


def measure(step, batches: list, warmup: int) -> dict:
    started = time.perf_counter()
    for item in batches[:warmup]:
        step(item)
    warmup_s = time.perf_counter() - started  # where a compiled step pays for its compiling
    timed = batches[warmup:]
    started = time.perf_counter()
    for item in timed:
        step(item)
    ms = 1000 * (time.perf_counter() - started) / len(timed)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for item in timed[:10]:
            step(item)
    ops = sum(1 for e in prof.events() if e.name.startswith("aten::")) / 10
    return {"ms_per_step": ms, "aten_ops_per_step": ops, "warmup_s": warmup_s}


def compare(model: str, steps: int, subset: int, threads: int, smoke: bool = False) -> dict:
    sections = {"data": {"limit": subset}, "model": MODELS[model], "train": {"num_threads": threads, "device": "cpu"}}
    if smoke:  # batches of 8, so the fixture's reviews make the warm-up and the timed steps
        sections = {"data": FIXTURE_DATA, "model": SMOKE_MODEL, "train": {**sections["train"], "batch_size": 8}}
    cfg = TrialConfig.model_validate(sections)
    run = prepare(cfg)
    data = run.train_set.data
    lengths = np.asarray(data.lengths)
    ids = [list(map(int, row[:n])) for row, n in zip(np.asarray(data.ids), lengths, strict=True)]
    labels = np.asarray(data.labels)
    batches = epoch_batches(data, cfg.train.batch_size, seed=0, epoch=0)[: steps + 10]
    plan = run.train_set.plan(batches)
    floor = measure(lambda wr: model_only_step(run, *wr), plan, warmup=10)
    yardstick = old_optimizer(run.net, cfg.train)
    old = measure(lambda rows: old_step(run, ids, labels, rows, yardstick), batches, warmup=10)
    optimizer = build_optimizer(run.net, cfg.train)
    total = []

    def new_step(width_rows) -> None:
        total.append(train_step(run, *width_rows, optimizer, 1.0))

    new = measure(new_step, plan, warmup=10)
    run.step_net = maybe_compile(run.net, "on", run.device)  # train.compile: on, the same step otherwise
    started = time.perf_counter()
    for width_rows in plan:  # compile for every width first (torch builds up to 3 graphs), so no
        new_step(width_rows)  # timed step below pays for a compile
    compile_pass_s = time.perf_counter() - started
    compiled = {**measure(new_step, plan, warmup=10), "compile_pass_s": compile_pass_s}
    float(sum(total))  # the one read the new path makes
    return {
        "old": old,
        "new": new,
        "new_compiled": compiled,
        "model_only": floor,
        "model_only_ms_ratio": floor["ms_per_step"] / old["ms_per_step"],
        "ms_ratio": new["ms_per_step"] / old["ms_per_step"],
        "ops_ratio": new["aten_ops_per_step"] / old["aten_ops_per_step"],
        "compiled_ms_ratio": compiled["ms_per_step"] / old["ms_per_step"],
        "compiled_ops_ratio": compiled["aten_ops_per_step"] / old["aten_ops_per_step"],
    }


def main() -> None:
    parser = BenchParser(__doc__)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--subset", type=int, default=20000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.smoke:
        args.steps = 4
    names = ["tiny"] if args.smoke else list(MODELS)  # --smoke: one model (each compiles, ~20 s on CPU)
    figures = {name: compare(name, args.steps, args.subset, args.threads, args.smoke) for name in names}
    for name, f in figures.items():
        print(
            f"{name:8s} old {f['old']['ms_per_step']:.2f} ms, {f['old']['aten_ops_per_step']:.0f} ops | "
            f"new {f['new']['ms_per_step']:.2f} ms, {f['new']['aten_ops_per_step']:.0f} ops | "
            f"ratio ms {f['ms_ratio']:.3f}, ops {f['ops_ratio']:.3f} | "
            f"forward+backward alone {f['model_only']['ms_per_step']:.2f} ms ({f['model_only_ms_ratio']:.3f} of old)"
        )
        c = f["new_compiled"]
        print(
            f"{'':8s} new, compiled {c['ms_per_step']:.2f} ms, {c['aten_ops_per_step']:.0f} ops "
            f"(one pass over the batches first, compiling included: {c['compile_pass_s']:.1f} s) | "
            f"ratio ms {f['compiled_ms_ratio']:.3f}, ops {f['compiled_ops_ratio']:.3f}"
        )
    write_result(
        "step_overhead",
        {
            **figures,
            "steps": args.steps,
            "subset": args.subset,
            "threads": args.threads,
            "targets": {"tiny ms_ratio": "<= 1/3", "tiny ops_ratio": "<= 1/2"},
        },
        args.smoke,
    )


if __name__ == "__main__":
    main()
