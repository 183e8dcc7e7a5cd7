"""Is the promotion gate honest? False promotions between seeds of one configuration, power against
a clearly weaker model, and how often validation's best is test's best.

To run: NSMC_DIR=/path/to/nsmc python -m bench.selection [--limit 80000] [--record]
        python -m bench.selection --smoke   (the test fixture, a minute: checks the script runs)

On an NSMC subset (`--limit` reviews of the train file, so 5% of them are the gate split):
- false promotions: 6 runs of one configuration, seeds 1..6; every ordered pair goes through the
  gate (registry/gate.py's `compare`, what `caviar promote` decides with). Target <= 5%. Beside it,
  the rule the gate replaced (promote unless the candidate's test accuracy is lower) on the same pairs.
- power: each of those runs against 3 runs of the same configuration trained 8 times shorter.
  Target >= 95%. The smallest gain the default gate (7,500 reviews on full NSMC) detects 80% of the
  time follows from the seeds' measured disagreement rate d: (z_0.975 + z_0.8) * sqrt(d / n).
- val's best against test's best: 8 configurations (lr and weight decay on a grid); among every 5
  of them, how often the one validation ranks first is also first on test, against chance (1/5).
  The same over the 6 seeds, where the configurations are one and the answer should be chance.
Every run trains without Ray (caviar train's path) and keeps its best checkpoint by validation.
"""

from __future__ import annotations

import itertools
import math
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.common import BenchParser, bench_job, model_shape, run_main, write_result
from caviar.registry.gate import compare, positive_probabilities
from caviar.tuning.pipeline import resolve
from caviar.tuning.stages.single_run import run_single
from model.data import load_gate

SEEDS = 6
WEAK_SEEDS = 3
SHORTER = 8  # the weak runs train this many times fewer steps
Z_975, Z_80 = 1.959964, 0.841621
DEFAULT_GATE_REVIEWS = 7500  # 5% of NSMC's 150,000 train reviews
MODEL = {"vocab_size": 8000, "layers": 1, "hidden": 128, "heads": 2, "intermediate": 256, "max_len": 64}
GRID = [{"train.lr": lr, "train.weight_decay": wd} for lr in (2e-4, 5e-4, 1.5e-3, 4e-3) for wd in (0.0, 0.1)]


@dataclass
class Run:
    label: str
    params: dict
    steps: int
    val_accuracy: float
    test_accuracy: float
    gate_positive: np.ndarray  # P(긍정) on the gate reviews


def train_runs(base: dict, variants: list[tuple[str, dict]], out: Path, gate_texts: list[str]) -> list[Run]:
    runs = []
    for i, (label, params) in enumerate(variants, start=1):
        raw = _laid_over(base, params)
        resolved = resolve(bench_job(raw, out))
        started = time.perf_counter()
        done = run_single(resolved.job, out / label, resolved.splits, progress=False)
        best = done.best
        runs.append(
            Run(
                label,
                params,
                done.steps,
                float(best["val_accuracy"]),
                float(done.test.accuracy),
                positive_probabilities(Path(done.checkpoint), gate_texts),
            )
        )
        print(
            f"[{i}/{len(variants)}] {label}: {done.steps} steps, val {runs[-1].val_accuracy:.4f}, "
            f"test {runs[-1].test_accuracy:.4f} ({time.perf_counter() - started:.0f}s)",
            flush=True,
        )
    return runs


def _laid_over(base: dict, params: dict) -> dict:
    raw = {section: dict(values) if isinstance(values, dict) else values for section, values in base.items()}
    for key, value in params.items():
        section, leaf = key.split(".", 1)
        raw.setdefault(section, {})[leaf] = value
    return raw


def gate_pairs(candidates: list[Run], currents: list[Run], labels: np.ndarray) -> list[dict]:
    """Every (candidate, current) pair of distinct runs through the gate's own decision."""
    out = []
    for mine, theirs in itertools.product(candidates, currents):
        if mine is theirs:
            continue
        result = compare(labels, mine.gate_positive, theirs.gate_positive, against=theirs.label)
        out.append(
            {
                "candidate": mine.label,
                "current": theirs.label,
                "gain": result.gain,
                "interval": result.interval,
                "promoted": result.passed,
                "test_rule_promoted": mine.test_accuracy >= theirs.test_accuracy,  # the rule it replaced
            }
        )
    return out


def disagreement(runs: list[Run], labels: np.ndarray) -> float:
    """Mean share of gate reviews that exactly one of two runs gets right, over all pairs."""
    right = [(r.gate_positive >= 0.5) == (labels == 1) for r in runs]
    return statistics.fmean(float((a != b).mean()) for a, b in itertools.combinations(right, 2))


def detectable_gain(d: float, n: int) -> float:
    return (Z_975 + Z_80) * math.sqrt(d / n)


def val_best_is_test_best(runs: list[Run], size: int = 5) -> dict:
    """Over every `size` of the runs: is the one validation ranks first also first on test (a test
    tie with the first counts)?"""
    size = min(size, len(runs))

    def hit(group) -> bool:
        return max(group, key=lambda r: r.val_accuracy).test_accuracy == max(r.test_accuracy for r in group)

    hits = [hit(group) for group in itertools.combinations(runs, size)]
    top = sorted(runs, key=lambda r: -r.val_accuracy)[:size]
    return {
        "groups": len(hits),
        "share": statistics.fmean(hits),
        "chance": 1 / size,
        "top_by_val": [{"label": r.label, "val": r.val_accuracy, "test": r.test_accuracy} for r in top],
        "top_val_best_is_test_best": hit(top),
    }


def share(pairs: list[dict], key: str) -> float:
    return statistics.fmean(p[key] for p in pairs)


def main() -> None:
    parser = BenchParser(__doc__)
    parser.add_argument("--limit", type=int, default=80000, help="train-file reviews used (stratified)")
    parser.add_argument("--test-limit", type=int, default=10000, help="test reviews each run reports on")
    parser.add_argument("--epochs", type=int, default=1, help="the configuration's length (the weak runs: 1/8)")
    args = parser.parse_args()
    started = time.perf_counter()

    data = {"limit": args.limit, "test_limit": args.test_limit}
    model, grid, seeds, weak_seeds = MODEL, GRID, SEEDS, WEAK_SEEDS
    if args.smoke:
        fixture = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "nsmc"
        data = {"dir": str(fixture), "val_fraction": 0.2, "gate": 0.2}
        model = {**MODEL, "vocab_size": 300, "hidden": 32, "intermediate": 64, "max_len": 32}
        grid, seeds, weak_seeds = GRID[:6:5], 3, 2
    base = {
        "name": "bench-selection",
        "data": data,
        "model": model,
        "train": {"epochs": args.epochs, "eval_every": 0.25},
    }
    gate_reviews = load_gate(resolve(bench_job(base, Path(tempfile.gettempdir()))).job.data)[0].reviews
    labels, texts = gate_reviews.label.to_numpy(), gate_reviews.document.tolist()
    print(
        f"gate: {len(labels):,} reviews; {seeds} seeds, {weak_seeds} weak runs, {len(grid)} configurations", flush=True
    )

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        same = train_runs(base, [(f"seed-{s}", {"train.seed": s}) for s in range(1, seeds + 1)], out, texts)
        steps = same[0].steps
        weak = train_runs(
            base,
            [
                (f"weak-{s}", {"train.seed": 100 + s, "train.max_steps": max(1, steps // SHORTER)})
                for s in range(1, weak_seeds + 1)
            ],
            out,
            texts,
        )
        search = train_runs(base, [(f"config-{i}", p) for i, p in enumerate(grid, start=1)], out, texts)

    null_pairs = gate_pairs(same, same, labels)
    power_pairs = gate_pairs(same, weak, labels)
    backwards = gate_pairs(weak, same, labels)  # the weak one as candidate: never promoted
    d = disagreement(same, labels)
    figures = {
        "config": {
            "data": data,
            "model": model_shape(resolve(bench_job(base, Path(tempfile.gettempdir()))).job.model),
            "epochs": args.epochs,
        },
        "gate_reviews": len(labels),
        "runs": {
            r.label: {"steps": r.steps, "val": r.val_accuracy, "test": r.test_accuracy, **r.params}
            for r in same + weak + search
        },
        "false_promotions": {
            "pairs": len(null_pairs),
            "share_promoted": share(null_pairs, "promoted"),
            "target": "<= 0.05",
            "met": share(null_pairs, "promoted") <= 0.05,
            "test_rule_share_promoted": share(null_pairs, "test_rule_promoted"),
        },
        "power": {
            "pairs": len(power_pairs),
            "share_promoted": share(power_pairs, "promoted"),
            "target": ">= 0.95",
            "met": share(power_pairs, "promoted") >= 0.95,
            "mean_gain": statistics.fmean(p["gain"] for p in power_pairs),
            "weak_steps": weak[0].steps,
            "strong_steps": steps,
            "weak_as_candidate_share_promoted": share(backwards, "promoted"),
        },
        "detectable_gain_80pct": {
            "seed_disagreement_rate": d,
            "at_this_gate": {"reviews": len(labels), "gain": detectable_gain(d, len(labels))},
            "at_default_gate": {"reviews": DEFAULT_GATE_REVIEWS, "gain": detectable_gain(d, DEFAULT_GATE_REVIEWS)},
            "formula": "(z_0.975 + z_0.8) * sqrt(d / n), d = share of gate reviews exactly one of two seeds gets right",
        },
        "val_best_is_test_best": {
            "configurations": val_best_is_test_best(search),
            "seeds_of_one": val_best_is_test_best(same),
        },
        "pairs": {"null": null_pairs, "power": power_pairs},
        "wall_s": time.perf_counter() - started,
    }
    write_result("selection", figures, args.smoke)


if __name__ == "__main__":
    run_main(main, "bench.selection")
