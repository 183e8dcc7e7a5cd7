"""The intervals on a fixture with known predictions: figures a statistician can check by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from caviar.experiment.intervals import interval, mcnemar_p, metric_on, paired_difference, seeded_difference
from caviar.tuning.stages.reseed import choose
from model.predictions import Predictions


def predictions(n: int, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels alternating 0/1, and P(긍정) that is right (0.9 or 0.1) where `right` says so."""
    labels = np.arange(n) % 2
    sure = np.where(labels == 1, 0.9, 0.1)
    return labels, np.where(right, sure, 1 - sure)


def test_an_accuracy_interval_is_the_binomial_one():
    n = 1000
    labels, positive = predictions(n, np.arange(n) < 800)
    got = interval("val_accuracy", labels, positive)
    assert got.value == pytest.approx(0.8)
    half = 1.96 * math.sqrt(0.8 * 0.2 / n)  # 0.0248: the normal approximation, fine at n = 1000
    assert got.low == pytest.approx(0.8 - half, abs=0.004) and got.high == pytest.approx(0.8 + half, abs=0.004)
    assert interval("val_accuracy", labels, positive) == got  # seeded: a report reads the same twice


def test_a_model_against_itself_is_tied_with_nothing_to_tell():
    labels, positive = predictions(500, np.arange(500) % 7 != 0)
    same = paired_difference("val_accuracy", labels, positive, positive)
    assert (same.value, same.low, same.high, same.mcnemar_p, same.tied) == (0.0, 0.0, 0.0, 1.0, True)


def test_a_paired_difference_is_as_wide_as_the_disagreements_make_it():
    n = 1000
    base = np.arange(n) < 800
    better = base.copy()
    better[800:820] = True  # right on 20 more reviews
    better[:5] = False  # and wrong on 5 the other got right
    labels, a = predictions(n, base)
    _, b = predictions(n, better)
    diff = paired_difference("val_accuracy", labels, a, b)
    assert diff.value == pytest.approx(0.015) and not diff.tied
    half = 1.96 * math.sqrt(25 / n**2 - 0.015**2 / n)  # paired: only the 25 disagreements vary
    assert diff.low == pytest.approx(0.015 - half, abs=0.002)
    assert diff.high == pytest.approx(0.015 + half, abs=0.002)
    assert diff.mcnemar_p == pytest.approx(2 * sum(math.comb(25, i) for i in range(6)) / 2**25)
    # unpaired, the two accuracies' intervals overlap: pairing is what tells them apart
    alone = [interval("val_accuracy", labels, p) for p in (a, b)]
    assert alone[0].high > alone[1].low


def test_mcnemar_small_case_by_hand():
    a = np.array([True, True, True, True, True, False])
    b = np.array([False, False, False, False, True, True])
    assert mcnemar_p(a, b) == pytest.approx(2 * (1 + 5) / 32)  # 4 against 1 of 5 discordant pairs


@pytest.mark.parametrize("metric", ["val_loss", "val_f1"])
def test_loss_and_f1_get_intervals_too(metric):
    labels, positive = predictions(400, np.arange(400) % 5 != 0)
    got = interval(metric, labels, positive)
    assert got.low < got.value < got.high
    expected = {"val_loss": -math.log(0.9) * 0.8 - math.log(0.1) * 0.2, "val_f1": 0.8}[metric]
    assert got.value == pytest.approx(expected, rel=1e-5)
    assert metric_on(metric, labels, positive)[0] == pytest.approx(got.value)


def test_predictions_round_trip_and_a_damaged_file_is_none(tmp_path):
    labels, positive = predictions(10, np.arange(10) < 7)
    Predictions.of(labels, positive).save(tmp_path)
    back = Predictions.load(tmp_path)
    assert back.labels.dtype == np.int8 and back.positive.dtype == np.float32
    assert np.array_equal(back.labels, labels) and np.allclose(back.positive, positive)
    (tmp_path / "val_predictions.npz").write_bytes(b"not a zip")
    assert Predictions.load(tmp_path) is None and Predictions.load(tmp_path / "none") is None
    (tmp_path / "val_predictions.npz").write_bytes(b"PK\x03\x04" + bytes(40))  # issue 47: BadZipFile escaped
    assert Predictions.load(tmp_path) is None


def seeded(n: int, right_per_seed: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    labels = predictions(n, right_per_seed[0])[0]
    return labels, np.stack([predictions(n, right)[1] for right in right_per_seed])


def test_a_seeded_difference_holds_the_seeds_spread_as_well_as_the_examples():
    n = 1000
    labels, a = seeded(n, [np.arange(n) < 800, np.arange(n) < 800])
    same = seeded_difference("val_accuracy", labels, a, a)
    assert (same.value, same.low, same.high, same.tied, same.n) == (0.0, 0.0, 0.0, True, 2 * n)
    # b is 4 points better with one seed and 0 with the other: the mean is +2, and resampling the
    # two seeds spreads the draws over [0, +4] points, so 0 is inside; the examples alone would not say so
    _, b = seeded(n, [np.arange(n) < 840, np.arange(n) < 800])
    split = seeded_difference("val_accuracy", labels, a, b)
    assert split.value == pytest.approx(0.02) and split.tied
    assert split.low == pytest.approx(0.0, abs=1e-9) and split.high == pytest.approx(0.04, abs=0.01)
    one_seed = paired_difference("val_accuracy", labels, a[0], b[0])
    assert not one_seed.tied  # 40 reviews better, none worse: one seed alone looks certain
    # better under both seeds: separated
    _, c = seeded(n, [np.arange(n) < 840, np.arange(n) < 850])
    assert not seeded_difference("val_accuracy", labels, a, c).tied


def config(rank: int, val_mean: float, parameters: int, steps: int = 100) -> dict:
    return {"rank": rank, "val_mean": val_mean, "parameters": parameters, "steps": steps}


def test_configurations_the_seeds_cannot_separate_go_to_the_cheapest():
    n = 1000
    labels, top = seeded(n, [np.arange(n) < 850, np.arange(n) < 860])
    _, close = seeded(n, [np.arange(n) < 851, np.arange(n) < 855])  # a hair lower on average
    _, poor = seeded(n, [np.arange(n) < 700, np.arange(n) < 710])
    positives = {1: top, 2: close, 3: poor}
    configs = [config(1, 0.855, 2_000_000), config(2, 0.853, 500_000), config(3, 0.705, 100_000)]
    choice = choose(configs, labels, positives, "val_accuracy", "max")
    assert choice["leader_rank"] == 1 and choice["chosen_rank"] == 2  # fewer parameters, not separated
    assert "configurations 1, 2 are not separated" in choice["chosen_because"]
    assert configs[2]["vs_leader"]["separated"] and not configs[1]["vs_leader"]["separated"]
    # the same size: fewer steps decides; then the better mean
    configs = [config(1, 0.855, 10, steps=200), config(2, 0.853, 10, steps=100)]
    assert choose(configs, labels, {1: top, 2: close}, "val_accuracy", "max")["chosen_rank"] == 2
    configs = [config(1, 0.855, 10), config(2, 0.853, 10)]
    choice = choose(configs, labels, {1: top, 2: close}, "val_accuracy", "max")
    assert choice["chosen_rank"] == 1 and choice["chosen_because"].endswith("which is also the best mean")
    # separated from everything: the best mean, whatever it costs
    configs = [config(1, 0.855, 2_000_000), config(3, 0.705, 100_000)]
    choice = choose(configs, labels, {1: top, 3: poor}, "val_accuracy", "max")
    assert choice["chosen_rank"] == 1 and "separated from every other configuration" in choice["chosen_because"]
