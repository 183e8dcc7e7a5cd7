"""Early stopping over fused members: one table for the whole experiment, each member a contestant.

Ray's schedulers see a fused trial as one trial; its members must be compared with every member of
every group, as if each were a trial. The table lives in one Ray actor per experiment (named after
the experiment folder), which each fused trial asks at every evaluation. Two rules, each Ray's own:

- ASHA (AsyncHyperBandScheduler, one bracket): at each milestone (grace_period x reduction_factor^k),
  a member below the (1 - 1/reduction_factor) quantile of the values recorded there so far stops.
- Median stopping (MedianStoppingRule, hard stop): past the grace period, a member whose best value
  so far is worse than the median of the other members' running means up to the same evaluation
  stops, once min_samples_required others have got that far. Where Ray would PAUSE a trial short of
  samples to let a pending one run, a member goes on: its slot in the stack has no one to yield to.

The actor dies with the driver; `caviar resume` builds it again from the members' recorded results
(`rebuild`), before any trial restarts, so a resumed search stops what it would have stopped.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np

ACTOR_PREFIX = "caviar-member-rungs-"


def first_at_or_past(rows: Iterable[tuple[float, float]], milestone: float) -> float | None:
    """ASHA's rung value, for a trial and a member alike: the metric of the first (time, metric)
    result at or past the milestone; None if none got there, or if that value is NaN."""
    reached = next((value for time, value in rows if time >= milestone), None)
    return None if reached is None or reached != reached else float(reached)


@dataclass(frozen=True)
class MemberRule:
    """How a job's scheduler stops fused members (tuning/search/schedulers.py makes it), as it crosses into
    every fused trial: ASHA's milestones or median stopping's grace and sample count, and the mode."""

    kind: Literal["asha", "median"]
    mode: str
    grace_period: float
    reduction_factor: float = 2.0  # asha
    max_t: int = 1  # asha
    min_samples_required: int = 1  # median

    def table(self) -> MemberRungs | MemberMedian:
        if self.kind == "asha":
            return MemberRungs(int(self.grace_period), self.reduction_factor, self.max_t, self.mode)
        return MemberMedian(self.grace_period, self.min_samples_required, self.mode)


@dataclass(frozen=True)
class RungsSpec:
    """What every fused trial is handed about the member table: its name, its rule (None: the job
    stops no member early) and the metric it ranks by."""

    experiment: str
    rule: MemberRule | None
    metric: str
    mode: str


class MemberRungs:
    """ASHA's table, plain Python (tested without Ray); `actor_for` wraps it in a Ray actor."""

    def __init__(self, grace_period: int, reduction_factor: float, max_t: int, mode: str):
        self.rf, self.sign = reduction_factor, 1.0 if mode == "max" else -1.0
        count = int(np.log(max_t / grace_period) / np.log(reduction_factor) + 1)  # as Ray's _Bracket
        self.rungs = [(grace_period * reduction_factor**k, {}) for k in reversed(range(count))]

    def decide(self, member: str, iteration: int, value: float) -> bool:
        """Record the member's value at the highest milestone it has reached and not yet passed;
        True if it must stop there."""
        if value != value:  # NaN: a diverged member stops
            return True
        for milestone, recorded in self.rungs:
            if iteration < milestone or member in recorded:
                continue
            cutoff = np.nanpercentile(list(recorded.values()), (1 - 1 / self.rf) * 100) if recorded else None
            recorded[member] = self.sign * value
            return cutoff is not None and self.sign * value < cutoff
        return False

    def finish(self, member: str, iteration: int, value: float) -> None:
        """A member's last evaluation: recorded as any other (Ray's on_trial_complete adds nothing)."""
        self.decide(member, iteration, value)

    def rebuild(self, histories: dict[str, list[tuple[int, float]]], finished: frozenset[str] = frozenset()) -> int:
        """Each member's (iteration, value) results, as recorded: the first at or past each milestone."""
        written = 0
        for milestone, recorded in self.rungs:
            for member, rows in histories.items():
                if (value := first_at_or_past(rows, milestone)) is not None:
                    recorded[member] = self.sign * value
                    written += 1
        return written

    def table(self) -> list[tuple[float, dict]]:
        return self.rungs


class MemberMedian:
    """Median stopping's table: every member's results so far."""

    def __init__(self, grace_period: float, min_samples_required: int, mode: str):
        self.grace, self.min_samples, self.sign = grace_period, min_samples_required, 1.0 if mode == "max" else -1.0
        self.results: dict[str, list[tuple[int, float]]] = {}

    def decide(self, member: str, iteration: int, value: float) -> bool:
        if value != value:
            return True
        mine = self.results.setdefault(member, [])
        mine.append((iteration, value))
        if iteration < self.grace:
            return False
        means = [
            mean
            for other, rows in self.results.items()
            if other != member and rows[-1][0] >= iteration
            if np.isfinite(mean := self._running_mean(rows, iteration))
        ]
        if len(means) < self.min_samples:
            return False
        best = max(self.sign * v for _, v in mine)
        return self.sign * float(np.median(means)) > best  # strictly worse than the median: Ray's rule

    def _running_mean(self, rows: list[tuple[int, float]], until: int) -> float:
        scoped = [v for t, v in rows if self.grace <= t <= until]
        return float(np.mean(scoped)) if scoped else float("nan")

    def finish(self, member: str, iteration: int, value: float) -> None:
        """The last evaluation, then Ray's on_trial_complete, which appends that result once more."""
        self.decide(member, iteration, value)
        self.results[member].append((iteration, value))

    def rebuild(self, histories: dict[str, list[tuple[int, float]]], finished: frozenset[str] = frozenset()) -> int:
        for member, rows in histories.items():
            self.results[member] = list(rows) + ([rows[-1]] if member in finished and rows else [])
        return sum(len(rows) for rows in histories.values())


def actor_for(experiment: str, rule: MemberRule | None):
    """The experiment's table as a named Ray actor (made on first use, found after that); None
    when the job stops no member early."""
    import ray  # lazy: the table itself is plain Python, tested without Ray

    if rule is None:
        return None
    remote = ray.remote(num_cpus=0)(_Table)
    return remote.options(name=ACTOR_PREFIX + experiment, get_if_exists=True).remote(rule)


class _Table:
    """The actor: one table of either kind behind one interface."""

    def __init__(self, rule: MemberRule):
        self.inner = rule.table()

    def decide(self, member: str, iteration: int, value: float) -> bool:
        return self.inner.decide(member, iteration, value)

    def finish(self, member: str, iteration: int, value: float) -> None:
        self.inner.finish(member, iteration, value)

    def rebuild(self, histories: dict, finished: frozenset[str] = frozenset()) -> int:
        return self.inner.rebuild(histories, finished)
