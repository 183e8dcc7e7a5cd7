"""The intervals on a fixture with known predictions: figures a statistician can check by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from caviar.experiment.intervals import interval, mcnemar_p, metric_on, paired_difference
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
