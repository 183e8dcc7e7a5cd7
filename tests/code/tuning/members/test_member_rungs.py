"""The member rung table decides as Ray's ASHA would if every member were a trial, and a table
rebuilt from recorded results decides the rest of the search as the uninterrupted one did."""

from __future__ import annotations

import random

from caviar.tuning.members.member_rungs import MemberMedian, MemberRule, MemberRungs, first_at_or_past
from tests.code.tuning.test_ray_compat import _asha_decisions, _median_decisions


def _feed(seed: int, members: int = 12, max_t: int = 8) -> list[tuple[str, int, float]]:
    """Members one after another (as one group at a time reports them), noisy rising curves."""
    rng = random.Random(seed)
    feed = []
    for m in range(members):
        level = rng.uniform(0.5, 0.9)
        feed += [(f"m{m}", t, level + 0.01 * t + rng.gauss(0, 0.02)) for t in range(1, max_t + 1)]
    return feed


def _table_decisions(table: MemberRungs, feed) -> dict[str, int | None]:
    stopped: dict[str, int | None] = {}
    for member, iteration, value in feed:
        if stopped.get(member):
            continue
        stopped[member] = iteration if table.decide(member, iteration, value) and iteration < 8 else None
    return stopped


def test_the_table_stops_what_rays_asha_stops():
    from ray.tune.schedulers import AsyncHyperBandScheduler

    for seed in range(5):
        feed = _feed(seed)
        ray_asha = AsyncHyperBandScheduler(max_t=8, grace_period=1, reduction_factor=2)
        ray_asha.set_search_properties("val_accuracy", "max")
        theirs = _asha_decisions(ray_asha, feed, max_t=8)
        ours = _table_decisions(MemberRungs(1, 2, 8, "max"), feed)
        assert ours == theirs, seed
        assert any(v is not None for v in ours.values())  # it stops some


def test_a_rebuilt_table_decides_the_rest_as_the_whole_run_did():
    feed = _feed(7)
    whole = _table_decisions(MemberRungs(1, 2, 8, "max"), feed)
    cut = len(feed) // 2
    recorded: dict[str, list[tuple[int, float]]] = {}
    live = _table_decisions(MemberRungs(1, 2, 8, "max"), feed[:cut])
    for member, iteration, value in feed[:cut]:
        if live.get(member) is None or iteration <= live[member]:
            recorded.setdefault(member, []).append((iteration, value))
    rebuilt = MemberRungs(1, 2, 8, "max")
    assert rebuilt.rebuild(recorded) > 0
    later = _table_decisions(rebuilt, [row for row in feed[cut:] if not live.get(row[0])])
    assert {m: later[m] for m in later} == {m: whole[m] for m in later}
    assert _table_decisions(MemberRungs(1, 2, 8, "max"), feed[cut:]) != {m: whole[m] for m in later}  # empty: differs


def _finishing_decisions(table, feed, ends: dict[str, int]) -> dict[str, int | None]:
    """As a fused group asks its table: decide at every evaluation but the last, finish at the last."""
    stopped: dict[str, int | None] = {}
    for member, iteration, value in feed:
        if stopped.get(member):
            continue
        if iteration == ends[member]:
            table.finish(member, iteration, value)
            stopped[member] = None
        else:
            stopped[member] = iteration if table.decide(member, iteration, value) else None
    return stopped


def _interleaved(seed: int, members: int = 10, max_t: int = 8) -> list[tuple[str, int, float]]:
    """Groups of 3 members reporting one evaluation at a time, group after group: the order a fused
    search feeds its table in."""
    feed = _feed(seed, members, max_t)
    by_member: dict[str, list] = {}
    for row in feed:
        by_member.setdefault(row[0], []).append(row)
    names = list(by_member)
    out = []
    for g in range(0, len(names), 3):
        group = names[g : g + 3]
        for t in range(max_t):
            out += [by_member[m][t] for m in group]
    return out


def test_the_median_table_stops_what_rays_median_rule_stops():
    from ray.tune.schedulers import MedianStoppingRule

    for seed in range(5):
        feed = _interleaved(seed)
        ends = {m: 8 for m, _, _ in feed}
        for grace, min_samples in ((1, 3), (3, 1)):
            ray_rule = MedianStoppingRule(
                time_attr="training_iteration",
                metric="val_accuracy",
                mode="max",
                grace_period=grace,
                min_samples_required=min_samples,
            )
            # a stop at a trial's last evaluation ends it where it ended anyway: finished, not stopped
            theirs = {m: None if t == ends[m] else t for m, t in _median_decisions(ray_rule, feed, ends).items()}
            ours = _finishing_decisions(MemberMedian(grace, min_samples, "max"), feed, ends)
            assert ours == theirs, (seed, grace, min_samples)
            assert any(v is not None for v in ours.values())


def test_a_rebuilt_median_table_decides_the_rest_as_the_whole_run_did():
    feed = _interleaved(3)
    ends = {m: 8 for m, _, _ in feed}
    whole = _finishing_decisions(MemberMedian(1, 2, "max"), feed, ends)
    first_group = {m for m, _, _ in feed[:24]}  # the first group ran to its end before the kill
    recorded: dict[str, list[tuple[int, float]]] = {}
    for member, iteration, value in feed[:24]:
        if whole.get(member) is None or iteration <= whole[member]:
            recorded.setdefault(member, []).append((iteration, value))
    finished = frozenset(m for m in first_group if whole[m] is None)
    rebuilt = MemberRule("median", "max", 1, min_samples_required=2).table()
    assert rebuilt.rebuild(recorded, finished) == sum(map(len, recorded.values()))
    later = _finishing_decisions(rebuilt, feed[24:], ends)
    assert later == {m: whole[m] for m in later}
    empty = _finishing_decisions(MemberMedian(1, 2, "max"), feed[24:], ends)
    assert empty != {m: whole[m] for m in later}  # without the recorded results it decides otherwise


def test_a_fused_job_gets_the_table_of_its_scheduler():
    from caviar.job.schema import JobSpec
    from caviar.tuning.members.fused_search import rungs_spec
    from tests.conftest import TINY

    def spec_of(scheduler: dict):
        job = JobSpec.model_validate({**TINY, "fuse": 2, "scheduler": scheduler})
        return rungs_spec(job, "file:///experiment")

    median = spec_of({"type": "median_stopping", "grace_period": 2, "min_samples_required": 2})
    assert median.rule == MemberRule("median", "max", 2, min_samples_required=2)
    assert isinstance(median.rule.table(), MemberMedian)
    asha = spec_of({"type": "asha", "max_t": 4, "grace_period": 1, "reduction_factor": 2})
    assert asha.rule == MemberRule("asha", "max", 1, reduction_factor=2, max_t=4)
    assert isinstance(asha.rule.table(), MemberRungs) and asha.rule.table().rungs == MemberRungs(1, 2, 4, "max").rungs
    assert spec_of({"type": "fifo"}).rule is None


def test_one_rung_rule_serves_trials_and_members():
    """ASHA's rung value is the first result at or past the milestone, for a Ray trial's rungs
    (ray_compat.scheduler_replay) and for a member's table alike; a NaN there records nothing."""
    rows = [(1, 0.5), (2, 0.6), (4, 0.7)]
    assert first_at_or_past(rows, 1) == 0.5 and first_at_or_past(rows, 3) == 0.7
    assert first_at_or_past(rows, 5) is None and first_at_or_past([(2, float("nan"))], 2) is None
