"""The member rung table decides as Ray's ASHA would if every member were a trial, and a table
rebuilt from recorded results decides the rest of the search as the uninterrupted one did."""

from __future__ import annotations

import random

from caviar.tuning.member_rungs import MemberRungs
from tests.code.tuning.test_ray_compat import _asha_decisions


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
