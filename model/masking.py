"""BERT's masking, shared by both pretraining objectives (model/mlm.py, model/electra.py): which
tokens are chosen and how they are corrupted, and the chosen rows padded for the output layer."""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase

from model.tokenizer import SPECIAL_TOKENS


def mask_tokens(
    ids: torch.Tensor, attention_mask: torch.Tensor, tokenizer: PreTrainedTokenizerBase, probability: float, gen
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(inputs, chosen, targets): BERT's 80/10/10 corruption of `probability` of the real tokens.
    [CLS], [SEP] and padding are never chosen; `targets` are the original ids at the chosen places."""
    special = torch.tensor(tokenizer.all_special_ids, device=ids.device)
    candidates = attention_mask.bool() & ~torch.isin(ids, special)
    draw = torch.rand(ids.shape, device=ids.device, generator=gen)
    chosen = candidates & (draw < probability)
    # one draw decides both: below 0.8*p -> [MASK], 0.8p..0.9p -> random token, the rest kept
    to_mask = chosen & (draw < 0.8 * probability)
    to_random = chosen & ~to_mask & (draw < 0.9 * probability)
    random_ids = torch.randint(len(SPECIAL_TOKENS), len(tokenizer), ids.shape, device=ids.device, generator=gen)
    inputs = torch.where(to_mask, tokenizer.mask_token_id, ids)
    inputs = torch.where(to_random, random_ids, inputs)
    return inputs, chosen, ids[chosen]


# In bf16, the output layer's row count (the chosen tokens, different in every batch) is padded up
# to a multiple of this. On a CPU with AVX-512 BF16/AMX (16-row tiles), bench/mlm_rows.py measured
# the padded step at 0.945 of the unpadded one's time (4 rounds of 300 steps; 0.889 over 8 rounds of
# 60); in fp32 at 1.049, so fp32 steps stay unpadded. Padding rows have no target.
ROW_ALIGN = 16


def aligned_rows(chosen: torch.Tensor, targets: torch.Tensor, align: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(flat row indices, targets) with the chosen rows padded to a multiple of `align`: padding
    repeats row 0 with the target -100, which cross_entropy ignores in the loss and its gradient."""
    rows = chosen.flatten().nonzero().squeeze(1)
    extra = -rows.numel() % align
    if not extra:
        return rows, targets
    return torch.cat([rows, rows.new_zeros(extra)]), torch.cat([targets, targets.new_full((extra,), -100)])
