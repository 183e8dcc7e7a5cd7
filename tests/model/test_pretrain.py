"""Masked-LM pretraining: BERT's masking, a loss that falls on the fixture, and only train text read."""

from __future__ import annotations

import pytest
import torch

from model.config import PretrainConfig
from model.data import load_splits
from model.mlm import aligned_rows, mask_tokens, mlm_network, mlm_step, pretrain, texts_sha256
from model.tokenizer import cached_wordpiece


def test_masking_is_bert_s_80_10_10_over_real_tokens_only(tiny_config):
    tokenizer = cached_wordpiece(load_splits(tiny_config.data).train.document.tolist(), 300)
    rows, width = 4000, 40
    lengths = torch.randint(3, width + 1, (rows,))
    real = torch.arange(width) < lengths[:, None]
    ids = torch.randint(len(tokenizer.all_special_ids), len(tokenizer), (rows, width))
    ids[:, 0] = tokenizer.cls_token_id
    ids[torch.arange(rows), lengths - 1] = tokenizer.sep_token_id
    ids[~real] = tokenizer.pad_token_id
    gen = torch.Generator().manual_seed(0)

    inputs, chosen, targets = mask_tokens(ids, real.long(), tokenizer, 0.15, gen)

    special = torch.isin(ids, torch.tensor(tokenizer.all_special_ids))
    assert not chosen[special].any()  # never [CLS], [SEP] or padding
    candidates = real & ~special
    assert abs(chosen.sum() / candidates.sum() - 0.15) < 0.01
    assert torch.equal(targets, ids[chosen])
    masked = (inputs[chosen] == tokenizer.mask_token_id).float().mean()
    kept = (inputs[chosen] == ids[chosen]).float().mean()
    assert abs(masked - 0.8) < 0.02 and abs(kept - 0.1) < 0.02  # the rest: a random token
    assert torch.equal(inputs[~chosen], ids[~chosen])
    again = mask_tokens(ids, real.long(), tokenizer, 0.15, gen)[1]
    assert not torch.equal(again, chosen)  # dynamic: every batch draws afresh


def test_aligned_rows_pads_the_chosen_rows_to_the_grid_with_ignored_targets():
    chosen = torch.zeros(3, 10, dtype=torch.bool)
    chosen[0, 2] = chosen[1, 5] = chosen[2, 9] = True
    targets = torch.tensor([7, 8, 9])

    rows, padded = aligned_rows(chosen, targets, 16)

    assert rows.numel() == padded.numel() == 16
    assert rows[:3].tolist() == [2, 15, 29] and padded[:3].tolist() == [7, 8, 9]
    assert (padded[3:] == -100).all()
    same_rows, same_targets = aligned_rows(chosen, targets, 3)  # already on the grid: untouched
    assert same_rows.tolist() == [2, 15, 29] and same_targets is targets


def test_padding_the_output_rows_changes_neither_the_mlm_loss_nor_its_gradients(tiny_config):
    tokenizer = cached_wordpiece(load_splits(tiny_config.data).train.document.tolist(), 300)
    net = mlm_network(tiny_config.model, tokenizer)
    net.eval()  # no dropout: the two passes must see the same network
    ids = torch.randint(len(tokenizer.all_special_ids), len(tokenizer), (8, 24))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    spec = PretrainConfig(mask_probability=0.15, precision="fp32")

    def loss_and_grads(row_align):
        net.zero_grad()
        loss = mlm_step(net, batch, tokenizer, spec, torch.Generator().manual_seed(1), torch.device("cpu"), row_align)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in net.parameters() if p.grad is not None]

    plain, plain_grads = loss_and_grads(1)
    padded, padded_grads = loss_and_grads(64)  # 8x24 tokens at 15%: ~29 chosen, so padding is certain

    assert torch.allclose(plain, padded)
    assert len(plain_grads) == len(padded_grads)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain_grads, padded_grads, strict=True))


@pytest.mark.parametrize("precision", ["auto", "bf16"])
def test_mlm_on_the_fixture_lowers_the_loss_and_reads_only_train_text(tiny_config, precision):
    splits = load_splits(tiny_config.data)
    spec = PretrainConfig(epochs=12, batch_size=16, lr=3e-3, log_every=12, seed=3, precision=precision)

    result = pretrain(tiny_config, spec, splits)

    losses = [p["mlm_loss"] for p in result.curve]
    assert len(losses) == result.steps // 12 and result.steps == 12 * 12
    assert losses[-1] < losses[0] - 0.5, losses
    assert result.texts == len(splits.train)
    assert result.texts_sha256 == texts_sha256(splits.train.document)
    assert result.texts_sha256 != texts_sha256([*splits.train.document, *splits.val.document])


def test_the_final_mlm_loss_is_the_last_full_window_not_a_short_last_point(tiny_config):
    """7 steps logged every 3: the last point covers step 7 alone. The run's figure must be the mean
    of steps 5-7, which a run logging every step (same seed, same batches) lets us check."""
    splits = load_splits(tiny_config.data)
    spec = PretrainConfig(max_steps=7, batch_size=16, lr=3e-3, seed=3)

    every_step = pretrain(tiny_config, spec.model_copy(update={"log_every": 1}), splits)
    by_three = pretrain(tiny_config, spec.model_copy(update={"log_every": 3}), splits)

    per_step = [p["mlm_loss"] for p in every_step.curve]
    assert [p["step"] for p in by_three.curve] == [3, 6, 7]
    assert by_three.curve[-1]["mlm_loss"] == pytest.approx(per_step[-1], rel=1e-4)
    assert by_three.mlm_loss == pytest.approx(sum(per_step[-3:]) / 3, rel=1e-4)
    assert by_three.mlm_loss != pytest.approx(by_three.curve[-1]["mlm_loss"], rel=1e-4)
