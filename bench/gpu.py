"""GPU benchmark: one trial eager against compiled, trials packed onto one GPU, and trial start-up.

To run: python -m bench.gpu                       (a GPU machine, NSMC_DIR set; about 8 minutes)
        python -m bench.gpu --device cpu --smoke  (the same script in seconds on CPU, to check it runs)

Writes bench/results/gpu.json (bench/results/gpu_smoke.json for --smoke) with the device's name:
  (a) one default-model trial on the train split, compile off vs on: examples/s, GPU utilization
      (sampled every 0.5 s), peak GPU memory, compile seconds;
  (b) the same 8-trial job (FIFO, 1 epoch of a subset) at gpu = 1, 0.5, 0.25 and 0.125 per trial:
      wall time, trials/hour, aggregate examples/s (on CPU the fraction applies to 2 CPUs instead);
  (c) trial start-up: from the trial function's start to its first finished step (`startup_s`).
Each stage checks the time left against --budget-s and is skipped, with the reason recorded, if the
budget is spent: the script always ends and always writes what it measured.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time

import torch

from bench.common import BenchParser, bench_job, smoke_sections, write_result
from caviar.experiment.record import load_trials
from caviar.tuning.pipeline import tune_job
from model.config import TrialConfig
from model.data import load_splits
from model.train import train

FRACTIONS = (1.0, 0.5, 0.25, 0.125)


class Utilization:
    """GPU utilization sampled in a thread while a block runs (nvidia's own counter, via torch)."""

    def __init__(self, device: str):
        self.device, self.samples, self.stop = device, [], threading.Event()

    def __enter__(self):
        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            self.thread = threading.Thread(target=self._sample, daemon=True)
            self.thread.start()
        return self

    def _sample(self) -> None:
        while not self.stop.wait(0.5):
            self.samples.append(torch.cuda.utilization())

    def __exit__(self, *exc) -> None:
        self.stop.set()

    def figures(self) -> dict:
        if self.device != "cuda":
            return {"gpu_util_mean": None, "peak_gpu_gb": None}
        return {
            "gpu_util_mean": statistics.fmean(self.samples) if self.samples else None,
            "peak_gpu_gb": torch.cuda.max_memory_allocated() / 2**30,
        }


def one_trial(args, compile_setting: str, splits) -> dict:
    steps = {
        "device": args.device,
        "compile": compile_setting,
        "epochs": 1,
        "max_steps": 6 if args.smoke else args.trial_steps,
        "eval_every": 1.0,
    }
    cfg = TrialConfig.model_validate(smoke_sections({"train": steps}, args.smoke))
    started = time.perf_counter()
    with Utilization(args.device) as util:
        result = train(cfg, splits=splits)
    last = result.history[-1]
    examples = result.steps * cfg.train.batch_size  # the last batch may be smaller: a close upper bound
    train_s = examples / result.examples_per_s
    return {
        "compile": compile_setting,
        "examples_per_s": result.examples_per_s,  # compile time included
        "examples_per_s_after_compile": examples / max(1e-9, train_s - last["compile_s"]),
        "wall_s": time.perf_counter() - started,
        "compile_s": last["compile_s"],
        "startup_s": last["startup_s"],
        "val_accuracy": last["val_accuracy"],
        "steps": result.steps,
        **util.figures(),
    }


def packed(args, fraction: float, storage: str) -> dict:

    gpu = fraction if args.device == "cuda" else 0
    cpu = args.cpus_per_trial if args.device == "cuda" else 2 * fraction
    job = bench_job(
        smoke_sections({
            "name": f"pack-{fraction:g}",
            "data": {"limit": 400 if args.smoke else args.subset},
            "train": {
                "device": args.device,
                "epochs": 1,
                "eval_every": 1.0,
                **({"max_steps": 4} if args.smoke else {}),
            },
            "scheduler": {"type": "fifo"},
            "num_samples": 2 if args.smoke else 8,
            "resources_per_trial": {"cpu": cpu, "gpu": gpu},
            "search_space": {"train.lr": {"loguniform": [3e-4, 2e-3]}},
        }, args.smoke),
        storage=storage,
    )  # fmt: skip
    with Utilization(args.device) as util:
        outcome = tune_job(job, experiment=f"pack-{fraction:g}").as_json()
    rows = _last_reports(outcome["experiment_dir"], job.train.batch_size)
    examples = sum(r["examples"] for r in rows)
    return {
        "fraction": fraction,
        "gpu_per_trial": gpu,
        "cpu_per_trial": cpu,
        "trials": len(outcome["trials"]),
        "errored": outcome["errored"],
        "wall_s": outcome["wall_s"],
        "trials_per_hour": 3600 * len(outcome["trials"]) / outcome["wall_s"],
        "aggregate_examples_per_s": examples / outcome["wall_s"],
        "startup_s": [r["startup_s"] for r in rows],
        **util.figures(),
    }


def _last_reports(experiment_dir: str, batch_size: int) -> list[dict]:
    """Each trial's examples trained (steps x batch size) and start-up, from its last report."""
    rows = []
    for trial in load_trials(experiment_dir):
        if len(trial.history):
            last = trial.history.iloc[-1]
            rows.append({"examples": int(last["step"]) * batch_size, "startup_s": float(last["startup_s"])})
    return rows


def main() -> None:
    parser = BenchParser(__doc__)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--budget-s", type=float, default=450, help="stop starting new stages after this")
    parser.add_argument("--trial-steps", type=int, default=2110, help="steps of the single trial (1 epoch)")
    parser.add_argument("--subset", type=int, default=60000, help="reviews for the packing job")
    parser.add_argument("--cpus-per-trial", type=float, default=1.0)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench.gpu: no CUDA device here; use --device cpu --smoke to check the script")
    deadline = time.monotonic() + args.budget_s
    figures: dict = {"device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu", "skipped": []}
    splits = load_splits(TrialConfig.model_validate(smoke_sections({}, args.smoke)).data)
    figures["one_trial"] = [one_trial(args, setting, splits) for setting in ("off", "on")]
    figures["packing"] = []
    with tempfile.TemporaryDirectory(prefix="caviar-bench-gpu-") as storage:
        for fraction in (FRACTIONS[0], FRACTIONS[-1]) if args.smoke else FRACTIONS:  # --smoke: both ends
            if time.monotonic() > deadline:
                figures["skipped"].append(f"packing at {fraction:g}: the {args.budget_s:g}s budget was spent")
                continue
            figures["packing"].append(packed(args, fraction, storage))
    by_fraction = {p["fraction"]: p["aggregate_examples_per_s"] for p in figures["packing"]}
    if 1.0 in by_fraction and 0.125 in by_fraction:
        figures["gain_at_0.125_vs_1"] = by_fraction[0.125] / by_fraction[1.0]
    figures["targets"] = {"one trial examples/s": ">= 30000", "8 trials at 0.125 vs 1": ">= 3x", "startup_s": "<= 5"}
    write_result("gpu", figures, args.smoke)


if __name__ == "__main__":
    main()
