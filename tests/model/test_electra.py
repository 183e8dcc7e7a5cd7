"""ELECTRA's replaced-token detection (issue 33): the generator and discriminator share their
embeddings, both losses fall on the fixture, and the discriminator fine-tunes as an MLM folder does."""

from __future__ import annotations

import pytest
import torch

from model.config import PretrainConfig, TrialConfig
from model.data import load_splits
from model.electra import ElectraPair, electra_step, generator_shape, replacements, sample_tokens
from model.tokenizer import cached_wordpiece
from tests.conftest import TINY


@pytest.fixture(scope="module")
def tokenizer():
    return cached_wordpiece(load_splits(TrialConfig.model_validate(TINY).data).train.document.tolist(), 300)


def test_the_generator_is_narrower_and_shares_the_embeddings(tiny_config, tokenizer):
    pair = ElectraPair(tiny_config.model, tokenizer, 0.25)
    assert generator_shape(tiny_config.model, 0.25) == (16, 1, 32)  # hidden 64 -> 16, 2 heads -> 1
    shared, theirs = pair.discriminator.embeddings, pair.generator.electra.embeddings
    assert theirs.word_embeddings is shared.word_embeddings
    assert theirs.position_embeddings is shared.position_embeddings
    assert pair.generator.generator_lm_head.weight is shared.word_embeddings.weight
    assert pair.generator.config.hidden_size == 16 and pair.discriminator.config.hidden_size == 64
    names = {id(p) for p in pair.parameters()}
    assert len(names) == len(list(pair.parameters()))  # each shared table counted once by the optimizer


def test_the_discriminator_is_told_exactly_which_tokens_were_replaced():
    ids = torch.tensor([[2, 10, 11, 12, 3, 0], [2, 13, 14, 3, 0, 0]])
    mask = (ids != 0).long()
    rows = torch.tensor([1, 2, 8])  # (0, 1), (0, 2) and (1, 2)
    sampled = torch.tensor([10, 99, 98])  # the first sample is the original token
    corrupted, replaced = replacements(ids, mask, rows, sampled)
    assert corrupted.tolist() == [[2, 10, 99, 12, 3, 0], [2, 13, 98, 3, 0, 0]]
    assert replaced.nonzero().tolist() == [[0, 2], [1, 2]]


def test_sampled_tokens_follow_the_generators_distribution():
    """Inverse-CDF sampling draws each token as often as its softmax probability says, and never a
    token of probability 0 (the first and last, here): the law torch.multinomial draws from."""
    probs = torch.tensor([0.0, 0.5, 0.3, 0.15, 0.05, 0.0])
    logits = probs.log().expand(40_000, -1)  # log 0 = -inf: probability exactly 0
    drawn = sample_tokens(logits, torch.Generator().manual_seed(0))
    counts = torch.bincount(drawn, minlength=len(probs)) / len(drawn)
    assert counts[0] == 0 and counts[-1] == 0
    assert torch.allclose(counts, probs, atol=0.01), counts.tolist()  # 0.01 is > 4 standard errors


def test_a_temperature_above_one_flattens_what_the_generator_samples(tiny_config, tokenizer, monkeypatch):
    """electra_step draws from softmax(logits / pretrain.sample_temperature): at 3 a generator sure of
    one token (logit 12 above the rest) draws it far less often than at 1."""
    from model import electra

    seen = []
    monkeypatch.setattr(electra, "sample_tokens", lambda logits, gen: seen.append(logits) or sample_tokens(logits, gen))
    pair = ElectraPair(tiny_config.model, tokenizer, 0.5).eval()
    with torch.no_grad():
        pair.generator.generator_lm_head.bias.zero_()
        pair.generator.generator_lm_head.bias[7] = 12.0  # the generator's favourite: token 7
    ids = torch.randint(len(tokenizer.all_special_ids), len(tokenizer), (64, 20))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    drawn = {}
    for temperature in (1.0, 3.0):
        spec = PretrainConfig(
            objective="electra", mask_probability=0.5, precision="fp32", sample_temperature=temperature
        )
        electra_step(pair, batch, tokenizer, spec, torch.Generator().manual_seed(0), torch.device("cpu"))
        drawn[temperature] = float(torch.softmax(seen.pop().detach(), -1)[:, 7].mean())
    assert drawn[1.0] > 0.99 and drawn[3.0] < drawn[1.0] - 0.05, drawn


def test_one_step_weighs_the_discriminator_by_disc_weight(tiny_config, tokenizer):
    pair = ElectraPair(tiny_config.model, tokenizer, 0.5).eval()
    ids = torch.randint(len(tokenizer.all_special_ids), len(tokenizer), (6, 20))
    mask = torch.ones_like(ids)
    mask[:, 15:] = 0
    spec = PretrainConfig(objective="electra", mask_probability=0.3, precision="fp32", disc_weight=10.0)
    batch = {"input_ids": ids, "attention_mask": mask}
    figures = electra_step(pair, batch, tokenizer, spec, torch.Generator().manual_seed(0), torch.device("cpu"))
    total = float(figures["loss"].detach())
    assert total == pytest.approx(float(figures["mlm_loss"] + 10.0 * figures["disc_loss"]), rel=1e-5)
    assert 0.0 <= float(figures["replaced_accuracy"]) <= 1.0 and figures["loss"].requires_grad


@pytest.mark.parametrize("precision", ["auto", "bf16"])
def test_electra_on_the_fixture_lowers_both_losses(tiny_config, precision):
    from model.mlm import pretrain

    splits = load_splits(tiny_config.data)
    spec = PretrainConfig(
        objective="electra", epochs=12, batch_size=16, lr=3e-3, log_every=12, seed=3, precision=precision
    )
    result = pretrain(tiny_config, spec, splits)
    first, last = result.curve[0], result.curve[-1]
    assert last["mlm_loss"] < first["mlm_loss"] - 0.5, (first, last)
    assert last["disc_loss"] < first["disc_loss"] - 0.05, (first, last)
    assert result.objective == "electra" and result.disc_loss is not None
    assert result.replaced_accuracy > 0.5 and 0.5 < result.original_share < 1
    assert {"replaced_accuracy", "original_share"} <= set(last)
    assert type(result.net).__name__ == "BertModel"  # the folder keeps the discriminator


def test_the_discriminator_learns_replacements_it_can_see(tiny_config, tokenizer, monkeypatch):
    """With a generator whose every sample is one fixed ordinary token, a working discriminator path
    (corruption, labels, head, update) soon beats answering "original" everywhere by far. Real samples
    are no such test: on full NSMC they stayed at that line (docs/benchmarks.md)."""
    from model import electra
    from model.mlm import pretrain

    fixed = tokenizer.convert_tokens_to_ids(tokenizer.tokenize("ㅋ"))[0]
    monkeypatch.setattr(electra, "sample_tokens", lambda logits, gen: torch.full((len(logits),), fixed))
    spec = PretrainConfig(objective="electra", epochs=4, batch_size=16, lr=3e-3, log_every=12, seed=3)
    result = pretrain(tiny_config, spec, load_splits(tiny_config.data))
    assert result.original_share < 0.95  # replacements were made: the line to clear is below 1
    assert result.replaced_accuracy > result.original_share + 0.05, (result.replaced_accuracy, result.original_share)
