"""The data path of a training step: encoded splits cached once per node, few batch shapes, batches
cut on the device, and an epoch order that is a pure function of (seed, epoch)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model import batches as bt
from model.config import TrialConfig
from model.train import prepare
from tests.conftest import TINY


def test_the_second_trial_of_a_job_does_not_encode(monkeypatch, tmp_path):
    monkeypatch.setenv("CAVIAR_CACHE", str(tmp_path / "cache"))
    calls = []
    real = bt.encode
    monkeypatch.setattr(bt, "encode", lambda *a, **k: calls.append(len(a[1])) or real(*a, **k))
    cfg = TrialConfig.model_validate(TINY)
    first = prepare(cfg)
    assert len(calls) == 2  # train and val, once
    second = prepare(cfg)
    assert len(calls) == 2, "the cache must serve the second trial"
    np.testing.assert_array_equal(first.train_set.data.ids, second.train_set.data.ids)
    np.testing.assert_array_equal(first.val_set.data.labels, second.val_set.data.labels)


@pytest.mark.parametrize("bucket", [16, 1])
def test_batches_meet_few_shapes_and_match_the_reviews(tiny_config, bucket):
    """GPU widths (16) give at most max_len/16 shapes; CPU widths (1) pad to the longest review only."""
    run = prepare(tiny_config)
    split, max_len = run.train_set, tiny_config.model.max_len
    split.bucket = bucket
    widths = set()
    for epoch in range(3):
        plan = split.plan(bt.epoch_batches(split.data, 8, seed=1, epoch=epoch))
        for width, rows in plan:
            batch = split.batch(width, rows)
            widths.add(batch["input_ids"].shape[1])
            host_rows = rows.cpu().numpy()
            lengths = np.asarray(split.data.lengths)[host_rows]
            assert width % bucket == 0 or width == max_len
            assert lengths.max() <= width < lengths.max() + bucket
            np.testing.assert_array_equal(batch["attention_mask"].sum(1).numpy(), lengths)
            expect = np.asarray(split.data.ids)[host_rows, :width]
            np.testing.assert_array_equal(batch["input_ids"].numpy(), expect)
    if bucket == bt.BUCKET["cuda"]:
        assert len(widths) <= -(-max_len // bucket)


def test_the_epoch_order_is_a_pure_function_of_seed_and_epoch(tiny_config):
    data = prepare(tiny_config).train_set.data
    a = bt.epoch_batches(data, 8, seed=3, epoch=2)
    b = bt.epoch_batches(data, 8, seed=3, epoch=2)
    c = bt.epoch_batches(data, 8, seed=3, epoch=1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    assert sorted(np.concatenate(a)) == list(range(len(data)))


def test_evaluation_probabilities_follow_the_split_order(tiny_config):
    """Batches are cut in length order; the probabilities come back in the split's own order."""
    from model.evaluate import positive_probabilities

    run = prepare(tiny_config)
    probs = positive_probabilities(run.net, run.val_set, batch_size=7)
    one_by_one = [
        positive_probabilities(run.net, bt.DeviceSplit(run.val_set.data.subset(np.array([i])), torch.device("cpu")))[0]
        for i in range(5)
    ]
    np.testing.assert_allclose(probs[:5], one_by_one, rtol=1e-5, atol=1e-6)
