"""LR range test: suggestions on synthetic curves with known answers, and a real run on the fixture."""

from __future__ import annotations

import numpy as np
import pytest

from model.lr_find import lr_ramp, run_lr_find, suggest


def synthetic(noise: float = 0.03, seed: int = 0, n: int = 300):
    """Flat at 0.69 below 1e-4, falling linearly in log-lr to 0.30 at 1e-2, diverging above 2e-2."""
    lrs = lr_ramp(1e-6, 1.0, n, "exp")
    x = np.log10(lrs)
    loss = np.where(x < -4, 0.69, 0.69 - (x + 4) / 2 * 0.39)
    loss = np.where(x > -2, 0.30, loss)
    loss = np.where(x > np.log10(2e-2), 0.30 + 3.0 * (x - np.log10(2e-2)) ** 2 * 10, loss)
    return lrs, loss + np.random.default_rng(seed).normal(0, noise, n)


@pytest.mark.parametrize("seed", range(5))
def test_suggestion_on_a_known_curve_is_robust_to_noise(seed):
    lrs, loss = synthetic(seed=seed)
    got = suggest(lrs, loss)
    assert 1e-4 <= got["base_lr"] <= 4e-4  # the loss starts falling at 1e-4
    assert 5e-3 <= got["max_lr"] <= 2.5e-2  # and bottoms out between 1e-2 and 2e-2
    assert got["base_lr"] < got["max_lr"]


def test_a_single_spike_does_not_move_the_suggestion():
    lrs, loss = synthetic(noise=0.0)
    clean = suggest(lrs, loss)
    spiked = loss.copy()
    spiked[120] = 0.0  # one absurdly good batch early on
    spiked[121] = 5.0  # and one absurdly bad one
    got = suggest(lrs, spiked)
    assert got["base_lr"] == pytest.approx(clean["base_lr"], rel=0.15)
    assert got["max_lr"] == pytest.approx(clean["max_lr"], rel=0.15)


def test_accuracy_that_falls_first_caps_max_lr():
    lrs, loss = synthetic(noise=0.0)
    val_lrs = lrs[::10]
    x = np.log10(val_lrs)
    accuracy = np.clip(0.5 + 0.2 * (x + 4), 0.5, None)  # rises from 1e-4 ...
    accuracy = np.where(x > np.log10(3e-3), 0.5 + 0.2 * (np.log10(3e-3) + 4) - 2 * (x - np.log10(3e-3)), accuracy)
    got = suggest(lrs, loss, val_lrs, accuracy)  # ... and falls after 3e-3
    assert 1.5e-3 <= got["max_lr"] <= 4e-3
    assert got["base_lr"] < got["max_lr"]


def test_a_flat_curve_still_gives_base_below_max():
    lrs = lr_ramp(1e-5, 1e-1, 100, "exp")
    got = suggest(lrs, np.full(100, 0.69) + np.random.default_rng(1).normal(0, 0.01, 100))
    assert got["base_lr"] < got["max_lr"]


def test_linear_and_exponential_ramps():
    assert lr_ramp(1e-4, 1e-2, 3, "exp") == pytest.approx([1e-4, 1e-3, 1e-2])
    assert lr_ramp(0.0, 1.0, 3, "linear") == pytest.approx([0.0, 0.5, 1.0])


def test_range_test_on_the_fixture(tiny_config):
    test = run_lr_find(
        tiny_config, min_lr=1e-5, max_lr=1.0, steps=120, epochs=None, mode="exp", eval_points=12, val_limit=48
    )
    assert len(test.lrs) == len(test.losses) <= 120
    assert test.lrs == sorted(test.lrs)
    assert len(test.val_accuracies) >= 5
    got = suggest(test.lrs, test.losses, test.val_lrs, test.val_accuracies)
    assert 1e-5 <= got["base_lr"] < got["max_lr"] <= 1.0
