"""caviar's live view (issue 48.6): one line per change and a summary at most every 30 s, in place
of Ray's table every 15 s. Driven here with stand-in trials, as Ray's loop calls it after each step."""

from __future__ import annotations

import io
from types import SimpleNamespace

from caviar.tuning.search.live_lines import SUMMARY_EVERY_S, LiveLines


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def trial(trial_id: str, lr: float):
    return SimpleNamespace(
        trial_id=trial_id, status="PENDING", last_result={}, config={"train": {"lr": lr}}, num_failures=0
    )


def evaluated(t, iteration: int, accuracy: float, **extra) -> None:
    t.last_result = {"training_iteration": iteration, "val_accuracy": accuracy, **extra}


def reporter(clock: Clock, out: io.StringIO, **options) -> LiveLines:
    return LiveLines("val_accuracy", "max", ["train.lr"], 4, "asha", out=out, clock=clock, **options)


def printed(out: io.StringIO) -> list[str]:
    return [line.split("] ", 1)[1] for line in out.getvalue().splitlines()]


def test_one_line_per_change_and_nothing_when_nothing_changed():
    clock, out = Clock(), io.StringIO()
    live = reporter(clock, out)
    a, b = trial("t_00000", 1e-3), trial("t_00001", 3e-4)
    live.report([a, b], False)
    assert out.getvalue() == ""  # both pending: nothing has happened yet
    a.status = b.status = "RUNNING"
    live.report([a, b], False)
    evaluated(a, 1, 0.71)
    live.report([a, b], False)
    evaluated(b, 1, 0.55)
    live.report([a, b], False)
    b.status = "TERMINATED"  # ASHA stops it at its first rung
    live.report([a, b], False)
    for _ in range(5):  # Ray's loop calls it every step; nothing new, nothing said
        live.report([a, b], False)
    evaluated(a, 4, 0.83, done_training=True)
    a.status = "TERMINATED"
    live.report([a, b], True)
    assert printed(out) == [
        "t_00000 started: train.lr=0.001",
        "t_00001 started: train.lr=0.0003",
        "t_00000 eval 1/4: val_accuracy 0.7100 (best so far)",
        "t_00001 eval 1/4: val_accuracy 0.5500",
        "t_00001 stopped by asha at eval 1: val_accuracy 0.5500",
        "t_00000 eval 4/4: val_accuracy 0.8300 (best so far)",
        "t_00000 finished at eval 4: val_accuracy 0.8300",
    ]


def test_why_a_trial_ended():
    clock, out = Clock(), io.StringIO()
    live = reporter(clock, out, time_budget_s=60)
    ended = {name: trial(name, 1e-3) for name in ("patience", "max_t", "error", "budget")}
    for t in ended.values():
        t.status = "RUNNING"
    live.report(list(ended.values()), False)
    evaluated(ended["patience"], 2, 0.6, done_training=True, stopped_by_patience=True)
    evaluated(ended["max_t"], 4, 0.7)
    evaluated(ended["error"], 1, 0.5)
    ended["error"].num_failures = 1
    for t in ended.values():
        t.status = "ERROR" if t is ended["error"] else "TERMINATED"
    live.report([ended["patience"], ended["max_t"], ended["error"]], False)
    clock.now += 61  # the budget has run out when the last one ends
    ended["budget"].status = "TERMINATED"
    live.report([ended["budget"]], False)
    lines = printed(out)
    assert "patience stopped by patience at eval 2: val_accuracy 0.6000" in lines
    assert "max_t finished at eval 4: val_accuracy 0.7000" in lines
    assert "error errored after 1 evaluations; caviar report names the error" in lines
    assert "budget cut by the time budget at eval 0" in lines


def test_a_failed_trial_that_restarts_says_so_once():
    clock, out = Clock(), io.StringIO()
    live = reporter(clock, out)
    t = trial("t_00000", 1e-3)
    t.status = "RUNNING"
    live.report([t], False)
    t.num_failures, t.status = 1, "PENDING"
    live.report([t], False)
    t.status = "RUNNING"
    live.report([t], False)
    assert printed(out) == [
        "t_00000 started: train.lr=0.001",
        "t_00000 failed (failure 1); it restarts from its checkpoint",
    ]


def test_a_summary_at_most_every_30_seconds():
    clock, out = Clock(), io.StringIO()
    live = reporter(clock, out)
    live.setup(total_samples=5)  # Ray has created 3 of the 5 trials so far
    trials = [trial(f"t_{i:05d}", 1e-3) for i in range(3)]
    trials[0].status = "RUNNING"
    evaluated(trials[0], 1, 0.7)
    live.report(trials, False)
    lines_before = len(printed(out))
    for _ in range(10):
        clock.now += SUMMARY_EVERY_S / 4
        live.report(trials, False)
    summaries = [line for line in printed(out)[lines_before:] if "running" in line]
    assert len(summaries) == 2  # 75 s: one at 30 s, one at 60 s
    assert summaries[0] == "1 running, 4 pending, 0 finished, 0 stopped, 0 errored; best val_accuracy 0.7000 (t_00000)"
