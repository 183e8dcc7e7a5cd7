"""One epoch of the default from-scratch model on full NSMC, against a plain torch loop as yardstick.

To run: NSMC_DIR=/path/to/nsmc python -m bench.train_one
        python -m bench.train_one --smoke    (seconds, on the fixture reviews: what the test suite runs)

Figures (targets from the issue): test accuracy after one epoch (>= 84%), caviar's training
throughput over a plain loop's on the same model and batches (ratio >= 0.95), peak RSS (<= 4 GB).
Both loops time only their training steps (collate, forward, backward, optimizer), not evaluation.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from bench.common import BenchParser, peak_rss_gb, write_result
from caviar.job.schema import JobSpec
from caviar.tuning.stages.single_run import run_single
from model.batches import DeviceSplit, encode, epoch_batches
from model.data import load_splits
from model.evaluate import cross_entropy
from model.network import build_network
from model.tokenizer import build_tokenizer


def plain_loop_examples_per_s(job: JobSpec, steps: int | None) -> tuple[float, int]:
    """The yardstick: the same network, optimizer and batches, in the plainest loop torch allows."""
    cfg = job.trial_config()
    torch.manual_seed(cfg.train.seed)
    splits = load_splits(cfg.data)
    tokenizer = build_tokenizer(cfg.model, splits.train.document.tolist())
    net = build_network(cfg.model, len(tokenizer), tokenizer.pad_token_id).train()
    data = encode(tokenizer, splits.train.document, splits.train.label, cfg.model.max_len)
    split = DeviceSplit(data, torch.device("cpu"))
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    batches = epoch_batches(data, cfg.train.batch_size, cfg.train.seed, 0)[:steps]
    seen, started = 0, time.perf_counter()
    for width, rows in split.plan(batches):
        batch = split.batch(width, rows)
        logits = net(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        cross_entropy(logits, batch["labels"]).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seen += len(rows)
    return seen / (time.perf_counter() - started), len(batches)


SMOKE_DATA = Path(__file__).parents[1] / "tests" / "fixtures" / "nsmc"


def main() -> None:
    parser = BenchParser(__doc__)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--yardstick-steps", type=int, default=None, help="default: the whole epoch")
    parser.add_argument("--out", type=Path, default=Path("results/bench/train_one"))
    args = parser.parse_args()

    spec: dict = {"name": "bench-train-one", "train": {"epochs": args.epochs}}
    if args.smoke:  # the fixture reviews and a model small enough for seconds: the script runs, nothing more
        spec |= {"data": {"dir": str(SMOKE_DATA)}, "model": {"vocab_size": 512, "hidden": 32, "layers": 1}}
        spec["model"] |= {"heads": 2, "intermediate": 64, "max_len": 32}
    job = JobSpec.model_validate(spec)
    run = run_single(job, args.out, load_splits(job.data), progress=not args.smoke)
    plain, plain_steps = plain_loop_examples_per_s(job, args.yardstick_steps)
    ratio, rss = run.examples_per_s / plain, peak_rss_gb()
    figures = {
        "smoke": args.smoke,
        "config": run.config,
        "epochs": args.epochs,
        "steps": run.steps,
        "val_accuracy": run.best["val_accuracy"],  # the evaluation validation chose
        "test_accuracy": run.test.accuracy,  # that checkpoint on the test file: reported once
        "test_f1": run.test.f1,
        "caviar_examples_per_s": run.examples_per_s,
        "plain_loop_examples_per_s": plain,
        "plain_loop_steps": plain_steps,
        "throughput_ratio": ratio,
        "peak_rss_gb": rss,
        "caviar_wall_s": run.wall_s,
        "targets": {"test_accuracy": ">= 0.84", "throughput_ratio": ">= 0.95", "peak_rss_gb": "<= 4"},
        "met": {"test_accuracy": run.test.accuracy >= 0.84, "throughput_ratio": ratio >= 0.95, "peak_rss_gb": rss <= 4},
    }
    write_result("train_one", figures, args.smoke)


if __name__ == "__main__":
    main()
