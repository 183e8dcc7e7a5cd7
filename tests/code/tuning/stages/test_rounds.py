"""Coarse-to-fine range arithmetic."""

from __future__ import annotations

import math

import pytest

from caviar.job.distributions import Distribution
from caviar.tuning.stages.rounds import narrow, narrow_space


def test_loguniform_narrows_in_log_space_with_a_margin():
    got = narrow(Distribution(loguniform=(1e-5, 1e-1)), [1e-3, 4e-3], margin=0.25)
    width = math.log(4e-3) - math.log(1e-3)  # wider than 10% of the 4-decade range
    assert got.loguniform[0] == pytest.approx(math.exp(math.log(1e-3) - 0.25 * width))
    assert got.loguniform[1] == pytest.approx(math.exp(math.log(4e-3) + 0.25 * width))


def test_uniform_is_clipped_to_the_previous_range():
    got = narrow(Distribution(uniform=(0.0, 1.0)), [0.0, 0.3], margin=0.5)
    assert got.uniform == pytest.approx((0.0, 0.45))


def test_a_single_value_keeps_a_tenth_of_the_width():
    got = narrow(Distribution(uniform=(0.0, 1.0)), [0.5, 0.5], margin=0.0)
    assert got.uniform == pytest.approx((0.45, 0.55))


def test_randint_and_quniform():
    assert narrow(Distribution(randint=(1, 8)), [3, 4], margin=0.0).randint == (3, 4)
    assert narrow(Distribution(randint=(1, 2)), [2, 2], margin=0.0).kind in ("randint", "choice")
    q = narrow(Distribution(quniform=(0.0, 0.2, 0.02)), [0.04, 0.06], margin=0.0)
    assert q.quniform[2] == 0.02 and 0.0 <= q.quniform[0] < q.quniform[1] <= 0.2


def test_categoricals_keep_the_top_values_in_order():
    assert narrow(Distribution(choice=["linear", "cosine", "cyclical"]), ["cyclical", "linear"], 0.2).choice == [
        "linear",
        "cyclical",
    ]
    assert narrow(Distribution(grid=[32, 64, 128]), [64], 0.2).grid == [64]


def test_every_narrowed_range_lies_inside_the_previous():
    space = {
        "train.lr": Distribution(loguniform=(1e-4, 1e-2)),
        "train.weight_decay": Distribution(uniform=(0.0, 0.1)),
        "model.layers": Distribution(randint=(1, 4)),
    }
    top = [
        {"train.lr": 9e-3, "train.weight_decay": 0.09, "model.layers": 4},
        {"train.lr": 5e-3, "train.weight_decay": 0.1, "model.layers": 3},
    ]
    new = narrow_space(space, top, margin=1.0)
    for key, dist in new.items():
        old = space[key].args
        assert old[0] <= dist.args[0] < dist.args[1] <= old[1], key
