"""ASHA over fused members: one rung table for the whole experiment, each member a contestant.

Ray's ASHA sees a fused trial as one trial; its members must be compared with every member of every
group, as if each were a trial. The table lives in one Ray actor per experiment (named after the
experiment folder), which each fused trial asks at every evaluation. Its rule is Ray's
AsyncHyperBandScheduler's with one bracket: at each milestone (grace_period x reduction_factor^k),
a member below the (1 - 1/reduction_factor) quantile of the values recorded there so far stops.
The actor dies with the driver; `caviar resume` builds it again from the members' recorded results
(`rebuild`), before any trial restarts, so a resumed search stops what it would have stopped.
"""

from __future__ import annotations

import numpy as np

ACTOR_PREFIX = "caviar-member-rungs-"


class MemberRungs:
    """The table itself, plain Python (tested without Ray); `actor_for` wraps it in a Ray actor."""

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

    def rebuild(self, histories: dict[str, list[tuple[int, float]]]) -> int:
        """Each member's (iteration, value) results, as recorded: the first at or past each milestone."""
        written = 0
        for milestone, recorded in self.rungs:
            for member, rows in histories.items():
                reached = [value for iteration, value in rows if iteration >= milestone]
                if reached and reached[0] == reached[0]:
                    recorded[member] = self.sign * reached[0]
                    written += 1
        return written

    def table(self) -> list[tuple[float, dict]]:
        return self.rungs


def actor_for(experiment: str, asha: dict | None, mode: str):
    """The experiment's table as a named Ray actor (made on first use, found after that); None
    when the job runs no ASHA."""
    import ray

    if asha is None:
        return None
    remote = ray.remote(num_cpus=0)(MemberRungs)
    return remote.options(name=ACTOR_PREFIX + experiment, get_if_exists=True).remote(
        asha["grace_period"], asha["reduction_factor"], asha["max_t"], mode
    )
