"""caviar's live view of a search: one line per change, instead of Ray's table reprinted every 15 s.

    [  14s] 14d3a_00000 started: train.lr=0.00121 train.weight_decay=0.027 train.schedule=linear
    [  29s] 14d3a_00000 eval 1/4: val_accuracy 0.7650 (best so far)
    [  57s] 14d3a_00003 stopped by asha at eval 1: val_accuracy 0.5503
    [  60s] 3 running, 2 pending, 2 finished, 1 stopped, 0 errored; best val_accuracy 0.8283 (14d3a_00000)

A line for each trial that starts, evaluates, fails, pauses, finishes or is stopped, keys spelt as in
the job (train.lr), and a summary line at most every 30 s. `caviar tune --verbose` (CAVIAR_VERBOSE=1)
brings Ray's own table back. It is a ray.tune.ProgressReporter, Ray's public hook for the console:
Ray calls it after every step of its loop, and it prints what changed since the last call.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

from ray.tune import ProgressReporter

from caviar.experiment.record import why_ended
from caviar.job.keys import flatten

SUMMARY_EVERY_S = 30.0
SAID = {"budget": "cut by the time budget", "patience": "stopped by patience"}  # why_ended's words, as lines


@dataclass
class _Seen:
    status: str = "PENDING"
    started: bool = False
    evaluations: int = 0
    failures: int = 0


class LiveLines(ProgressReporter):
    def __init__(
        self,
        metric: str,
        mode: str,
        params: list[str],
        max_t: int | None,
        scheduler: str,
        time_budget_s: float | None = None,
        out=None,
        clock=time.monotonic,
    ):
        self.metric, self.mode, self.params, self.max_t = metric, mode, list(params), max_t
        self.scheduler, self.time_budget_s = scheduler, time_budget_s
        self.out, self.clock = out, clock
        self.started = clock()
        self.last_summary = self.started
        self.seen: dict[str, _Seen] = {}
        self.best: tuple[float, str] | None = None
        self.total: int | None = None

    # ProgressReporter's interface: Ray sets it up once, then asks before every report (the diff is
    # cheap, so always)
    def setup(self, start_time=None, total_samples=None, metric=None, mode=None, **kwargs) -> None:
        self.total = total_samples  # trials the search will create; fewer exist at the start

    def should_report(self, trials: list, done: bool = False) -> bool:
        return True

    def report(self, trials: list, done: bool, *sys_info: str) -> None:
        for trial in trials:
            for line in self._changes(trial):
                self._say(line)
        if not done and self.clock() - self.last_summary >= SUMMARY_EVERY_S:
            self.last_summary = self.clock()
            self._say(self.summary(trials))

    def _say(self, line: str) -> None:
        out = self.out or sys.stderr  # read at each line: pytest and the CLI swap sys.stderr
        print(f"[{self.clock() - self.started:5.0f}s] {line}", file=out, flush=True)

    def _changes(self, trial) -> list[str]:
        seen = self.seen.setdefault(trial.trial_id, _Seen())
        lines = []
        if trial.num_failures > seen.failures:
            seen.failures = trial.num_failures
            if trial.status != "ERROR":
                lines.append(f"{trial.trial_id} failed (failure {trial.num_failures}); it restarts from its checkpoint")
        if trial.status == "RUNNING" and not seen.started:
            seen.started = True
            lines.append(f"{trial.trial_id} started: {self._params(trial)}")
        result = trial.last_result or {}
        evaluations = int(result.get("training_iteration") or 0)
        if evaluations > seen.evaluations:
            seen.evaluations = evaluations
            lines.append(
                f"{trial.trial_id} eval {evaluations}{self._of_max()}: {self._metrics(trial.trial_id, result)}"
            )
        if trial.status != seen.status:
            lines += self._ended(trial, seen, result)
            seen.status = trial.status
        return lines

    def _ended(self, trial, seen: _Seen, result: dict) -> list[str]:
        if trial.status == "ERROR":
            return [f"{trial.trial_id} errored after {seen.evaluations} evaluations; caviar report names the error"]
        if trial.status == "PAUSED":
            return [f"{trial.trial_id} paused by {self.scheduler} at eval {seen.evaluations}"]
        if trial.status != "TERMINATED":
            return []
        return [
            f"{trial.trial_id} {self._why(result, seen.evaluations)} at eval {seen.evaluations}{self._value(result)}"
        ]

    def _why(self, result: dict, evaluations: int) -> str:
        """Why a TERMINATED trial ended, as far as the driver can tell while the run goes on (the
        budget from its own clock: the record of the trials it cut is written at the end)."""
        out_of_time = self.time_budget_s is not None and self.clock() - self.started >= self.time_budget_s - 1
        why = why_ended(result, evaluations, self.max_t, out_of_time)
        return SAID.get(why, why) if why != "scheduler" else f"stopped by {self.scheduler}"

    def summary(self, trials: list) -> str:
        counts = {"running": 0, "pending": 0, "finished": 0, "stopped": 0, "errored": 0}
        counts["pending"] += max(0, (self.total or 0) - len(trials))  # not created by the search yet
        for trial in trials:
            if trial.status == "TERMINATED":
                result = trial.last_result or {}
                why = self._why(result, int(result.get("training_iteration") or 0))
                counts["finished" if why == "finished" else "stopped"] += 1
            elif trial.status == "ERROR":
                counts["errored"] += 1
            else:
                counts["running" if trial.status == "RUNNING" else "pending"] += 1
        best = "" if self.best is None else f"; best {self.metric} {self.best[0]:.4f} ({self.best[1]})"
        return ", ".join(f"{n} {state}" for state, n in counts.items()) + best

    def _params(self, trial) -> str:
        config = flatten(trial.config or {})
        shown = [f"{k}={_short(config[k])}" for k in self.params if k in config]
        return " ".join(shown) or "the job's fixed values"

    def _of_max(self) -> str:
        return f"/{self.max_t}" if self.max_t else ""

    def _value(self, result: dict) -> str:
        value = result.get(self.metric)
        return "" if value is None else f": {self.metric} {value:.4f}"

    def _metrics(self, trial_id: str, result: dict) -> str:
        value = result.get(self.metric)
        if value is None:
            return "no " + self.metric
        text = f"{self.metric} {value:.4f}"
        if self.metric != "val_accuracy" and result.get("val_accuracy") is not None:
            text += f", val_accuracy {result['val_accuracy']:.4f}"
        if result.get("members_live") is not None:
            text += f" (best of its members; {result['members_live']} live)"
        better = self.best is None or (value > self.best[0] if self.mode == "max" else value < self.best[0])
        if better:
            self.best = (float(value), trial_id)
            text += " (best so far)"
        return text


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
