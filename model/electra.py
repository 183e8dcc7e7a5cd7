"""Replaced-token detection (ELECTRA, Clark et al., ICLR 2020) as a pretraining objective.

To run: caviar pretrain tune_jobs/nsmc_pretrained.yaml --set pretrain.objective=electra

Masked-LM learns from the 15% of tokens it masks; ELECTRA's discriminator learns from every token.
A small generator (a masked LM at `pretrain.generator_scale` of the discriminator's width, sharing
its token, position and type embeddings) fills the masked places with tokens sampled from its own
predictions; the discriminator, the job's own BERT, says of every real token whether it is the
original or a replacement. The loss is the generator's MLM loss plus `pretrain.disc_weight` times
the discriminator's. `pretrain.sample_temperature` above 1 flattens what the generator samples: on
full NSMC its samples at 1 were too close to the originals for the discriminator ever to start
learning (docs/benchmarks.md). The discriminator's head is one logit per token, so a step costs little more
than an MLM step: the vocabulary-sized layer runs on the masked rows only, in the narrow generator.

The discriminator is what the pretrained folder holds: a `BertModel`, saved with save_pretrained,
that `model.pretrained` loads as it loads an MLM folder (model/network.py's from_pretrained).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import BertModel, ElectraConfig, ElectraForMaskedLM, PreTrainedTokenizerBase

from model.config import ModelConfig, PretrainConfig
from model.device import autocast, bf16_on
from model.masking import ROW_ALIGN, aligned_rows, mask_tokens
from model.network import scratch_config


def generator_shape(model: ModelConfig, scale: float) -> tuple[int, int, int]:
    """(hidden, heads, intermediate) of the generator: the discriminator's scaled, with heads that
    divide the width (ELECTRA keeps 64 per head; the small models here have fewer)."""
    hidden = max(8, round(model.hidden * scale))
    heads = max(1, min(model.heads, round(model.heads * scale)))
    while hidden % heads:
        heads -= 1
    return hidden, heads, max(8, round(model.intermediate * scale))


class ElectraPair(nn.Module):
    """The generator and the discriminator (with its one-logit head), embeddings shared."""

    def __init__(self, model: ModelConfig, tokenizer: PreTrainedTokenizerBase, scale: float):
        super().__init__()
        config = scratch_config(model, len(tokenizer), tokenizer.pad_token_id)
        self.discriminator = BertModel(config, add_pooling_layer=False)
        self.discriminator.config.architectures = ["BertModel"]
        hidden = config.hidden_size
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, 1))
        g_hidden, g_heads, g_intermediate = generator_shape(model, scale)
        self.generator = ElectraForMaskedLM(
            ElectraConfig(
                vocab_size=config.vocab_size,
                embedding_size=hidden,  # the discriminator's, so the tables can be shared
                hidden_size=g_hidden,
                num_hidden_layers=config.num_hidden_layers,
                num_attention_heads=g_heads,
                intermediate_size=g_intermediate,
                hidden_dropout_prob=config.hidden_dropout_prob,
                attention_probs_dropout_prob=config.attention_probs_dropout_prob,
                max_position_embeddings=config.max_position_embeddings,
                type_vocab_size=config.type_vocab_size,
                pad_token_id=config.pad_token_id,
            )
        )
        shared, theirs = self.discriminator.embeddings, self.generator.electra.embeddings
        theirs.word_embeddings = shared.word_embeddings
        theirs.position_embeddings = shared.position_embeddings
        theirs.token_type_embeddings = shared.token_type_embeddings
        self.generator.generator_lm_head.weight = shared.word_embeddings.weight  # tied, as in the MLM head


def sample_tokens(logits: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One token per row, drawn from softmax(logits), by inverting each row's cumulative distribution.
    The same law as torch.multinomial, at ~1/10 of its cost on a CPU (bench/pretrain_objectives.py):
    there it was the step's largest single part. `right=True` never picks a token of probability 0."""
    cumulative = torch.softmax(logits.float(), -1).cumsum_(-1)
    draw = torch.rand(len(cumulative), 1, device=logits.device, generator=gen) * cumulative[:, -1:]
    return torch.searchsorted(cumulative, draw, right=True).squeeze(1).clamp_(max=logits.shape[-1] - 1)


def replacements(ids: torch.Tensor, mask: torch.Tensor, rows: torch.Tensor, sampled: torch.Tensor):
    """(the discriminator's input: `ids` with the sampled tokens at the flat `rows`, its targets:
    True where a real token differs from the original). A sample equal to the original counts as
    original, as ELECTRA labels it."""
    corrupted = ids.flatten().clone()
    corrupted[rows] = sampled
    corrupted = corrupted.view_as(ids)
    return corrupted, (corrupted != ids) & mask.bool()


def electra_step(
    pair: ElectraPair, batch: dict, tokenizer, spec: PretrainConfig, gen: torch.Generator, device
) -> dict[str, torch.Tensor] | None:
    """One batch's losses: {"loss", "mlm_loss" (the generator's), "disc_loss", "replaced_accuracy",
    "original_share"}; None when no token was chosen (tiny batches only). `original_share` is the
    accuracy of answering "original" everywhere: the discriminator has learned only past it."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    inputs, chosen, targets = mask_tokens(ids, mask, tokenizer, spec.mask_probability, gen)
    if targets.numel() == 0:
        return None
    real = len(targets)
    rows, padded = aligned_rows(chosen, targets, ROW_ALIGN if bf16_on(device, spec.precision) else 1)
    with autocast(device, spec.precision):
        hidden = pair.generator.electra(input_ids=inputs, attention_mask=mask).last_hidden_state
        logits = pair.generator.generator_lm_head(pair.generator.generator_predictions(hidden.flatten(0, 1)[rows]))
    mlm_loss = nn.functional.cross_entropy(logits.float(), padded, ignore_index=-100)
    with torch.no_grad():  # the replacements are samples: no gradient flows back through them
        drawn_from = logits[:real] if spec.sample_temperature == 1 else logits[:real].float() / spec.sample_temperature
        sampled = sample_tokens(drawn_from, gen)  # at 1, no extra copy of the rows' logits on this hot path
    corrupted, replaced = replacements(ids, mask, rows[:real], sampled)
    tokens = mask.bool()
    labels = replaced[tokens]
    with autocast(device, spec.precision):
        states = pair.discriminator(input_ids=corrupted, attention_mask=mask).last_hidden_state
        scores = pair.head(states[tokens]).squeeze(-1).float()
    disc_loss = nn.functional.binary_cross_entropy_with_logits(scores, labels.float())
    accuracy = ((scores > 0) == labels).float().mean()
    return {
        "loss": mlm_loss + spec.disc_weight * disc_loss,
        "mlm_loss": mlm_loss.detach(),
        "disc_loss": disc_loss.detach(),
        "replaced_accuracy": accuracy,
        "original_share": 1.0 - labels.float().mean(),
    }
