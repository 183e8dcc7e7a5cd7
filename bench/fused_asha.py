"""ASHA over fused members against ASHA over trials: the quickstart search with fuse: 4 and fuse: 1,
the same seed and configurations.

To run: NSMC_DIR=/path/to/nsmc python -m bench.fused_asha [--record]
        python -m bench.fused_asha --smoke   (the test fixture, seconds: checks the script runs)

Two phases, each running fuse: 1 and then fuse: 4:
- as shipped (2 trials, or 2 groups, at a time): wall time, the stopped set (by sample index) and
  the best validation accuracy;
- one at a time (max_concurrent_trials: 1, 2 CPUs each), where the order in which results reach
  ASHA is known: fuse: 1 trial after trial, fuse: 4 group after group with a group's members
  evaluation by evaluation. Asynchronous ASHA's decisions depend on that order, so the two stopped
  sets can differ with no tie and no fault. Replaying ASHA's rule on the recorded values shows
  which: each run replayed in its own order gives its own stopped set (the rung table is ASHA), and
  fuse: 1's values replayed in fuse: 4's order give fuse: 4's set where the values agree (members
  with dropout draw other masks than a trial alone, so theirs differ).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from bench.common import BenchParser, run_main, write_result
from caviar.experiment.record import load_trials
from caviar.job.loading import load_job
from caviar.job.schema import JobSpec
from caviar.tuning.members.fusion import fused_groups, sample_members
from caviar.tuning.members.member_rungs import MemberRungs
from caviar.tuning.pipeline import tune_job

K = 4
ROOT = Path(__file__).resolve().parents[1]


def search(job, name: str) -> dict:
    """Run the job; per sample index: its values at each evaluation, where it was stopped, the best."""
    import ray

    order = [json.dumps(m, sort_keys=True) for m in sample_members(job)]
    started = time.perf_counter()
    outcome = tune_job(job, experiment=name)
    wall = time.perf_counter() - started
    ray.shutdown()
    trials = load_trials(Path(outcome.experiment_dir))
    index = {t.trial_id: order.index(json.dumps(t.params, sort_keys=True)) for t in trials}
    return {
        "wall_s": wall,
        "stopped": sorted(index[t.trial_id] for t in trials if t.stopped_early),
        "evaluations": {index[t.trial_id]: t.evaluations for t in trials},
        "values": {index[t.trial_id]: [float(v) for v in t.history[job.metric]] for t in trials},
        "best_val_accuracy": outcome.best_metric,
        "best_member": index[outcome.best_trial],
    }


def replay(values: dict[int, list[float]], groups: list[list[int]], job) -> set[int] | None:
    """ASHA's rule (the member rung table) fed in the one-at-a-time order: groups one after another,
    a group's live members evaluation by evaluation (a group of one is a trial). The stopped set,
    or None where the order reaches an evaluation `values` does not hold."""
    s = job.scheduler
    table, stopped = MemberRungs(s.grace_period, s.reduction_factor, s.max_t, job.mode), set()
    last = min(s.max_t, job.train.epochs * max(1, round(1 / job.train.eval_every)))  # a trial's own end
    for group in groups:
        live = list(group)
        for evaluation in range(1, last + 1):
            for member in list(live):
                if evaluation > len(values[member]):
                    return None
                value = values[member][evaluation - 1]
                if evaluation == last:
                    table.finish(str(member), evaluation, value)
                    live.remove(member)
                elif table.decide(str(member), evaluation, value):
                    stopped.add(member)
                    live.remove(member)
            if not live:
                break
    return stopped


def quickstart(tmp: str, smoke: bool):
    """tune_jobs/quickstart.yaml, its storage in `tmp`; for --smoke, on the test fixture with a tiny model."""
    job = load_job(ROOT / "tune_jobs" / "quickstart.yaml")
    raw = job.model_dump(mode="json") | {"storage": tmp}
    if smoke:
        raw["data"] = {"dir": str(ROOT / "tests" / "fixtures" / "nsmc"), "val_fraction": 0.2}
        raw["model"] |= {"vocab_size": 300, "hidden": 32, "intermediate": 64, "max_len": 32}
        raw["train"] |= {"batch_size": 8, "lr": 3e-3, "epochs": 1}
        raw["num_samples"] = 4  # one fused group of K
    return JobSpec.model_validate(raw)


def one_at_a_time(tmp: str, smoke: bool) -> dict:

    base = quickstart(tmp, smoke).model_copy(update={"max_concurrent_trials": 1})
    base = base.model_copy(update={"resources_per_trial": base.resources_per_trial.model_copy(update={"cpu": 2})})
    runs = {fuse: search(base.model_copy(update={"fuse": fuse}), f"sequential-{fuse}") for fuse in (1, K)}
    n = base.num_samples
    groups = {1: [[i] for i in range(n)], K: [[int(m) for m in g] for g in _group_indexes(base, fused_groups)]}
    merged = {i: runs[1]["values"][i] + runs[K]["values"][i][len(runs[1]["values"][i]) :] for i in range(n)}
    common = {
        i: max((abs(a - b) for a, b in zip(runs[1]["values"][i], runs[K]["values"][i], strict=False)), default=0.0)
        for i in range(n)
    }
    return {
        "fuse_1": runs[1],
        f"fuse_{K}": runs[K],
        "replayed_fuse_1_in_its_order": sorted(replay(runs[1]["values"], groups[1], base) or []),
        f"replayed_fuse_{K}_in_its_order": sorted(replay(runs[K]["values"], groups[K], base) or []),
        f"replayed_fuse_1_values_in_fuse_{K}_order": _sorted_or_none(replay(merged, groups[K], base)),
        "max_value_difference_by_sample": common,
        "dropout_by_sample": {i: m.get("model.dropout") for i, m in enumerate(_members(base))},
    }


def _members(job) -> list[dict]:

    return sample_members(job)


def _group_indexes(job, fused_groups) -> list[list[int]]:
    order = [json.dumps(m, sort_keys=True) for m in _members(job)]
    fused = job.model_copy(update={"fuse": K})
    return [[order.index(json.dumps(m, sort_keys=True)) for m in group] for group in fused_groups(fused)]


def _sorted_or_none(stopped: set[int] | None) -> list[int] | None:
    return None if stopped is None else sorted(stopped)


def main() -> None:
    parser = BenchParser(__doc__)
    args = parser.parse_args()
    out = {"job": "tune_jobs/quickstart.yaml" + (" on the test fixture, a tiny model" if args.smoke else "")}
    with tempfile.TemporaryDirectory() as tmp:
        if not args.smoke:  # --smoke: the one-at-a-time section alone, which runs the same searches and more
            shipped = quickstart(tmp, args.smoke)
            runs = {fuse: search(shipped.model_copy(update={"fuse": fuse}), f"shipped-{fuse}") for fuse in (1, K)}
            for run in runs.values():
                run.pop("values")
            out["as_shipped"] = {
                "fuse_1": runs[1],
                f"fuse_{K}": runs[K],
                "same_stopped_set": runs[1]["stopped"] == runs[K]["stopped"],
                "wall_ratio": runs[K]["wall_s"] / runs[1]["wall_s"],
            }
        out["one_at_a_time"] = one_at_a_time(tmp, args.smoke)
    write_result("fused_asha", out, args.smoke)


if __name__ == "__main__":
    run_main(main, "bench.fused_asha")
