"""The classifier: a from-scratch BERT sized by the job, or a pretrained encoder; linear or MLP head.

Both are rebuilt from a transformers config alone (`from_config`), so a checkpoint loads offline
even when it started from the hub.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, BertConfig, PretrainedConfig

from model.config import ModelConfig
from model.data import fingerprint
from model.errors import UserError

NUM_LABELS = 2


def scratch_config(cfg: ModelConfig, vocab_size: int, pad_id: int) -> BertConfig:
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        intermediate_size=cfg.intermediate,
        hidden_dropout_prob=cfg.dropout,
        attention_probs_dropout_prob=cfg.dropout,
        max_position_embeddings=cfg.max_len,
        type_vocab_size=1,
        pad_token_id=pad_id,
        num_labels=NUM_LABELS,
    )


def mlp_head(width: int, cfg: ModelConfig) -> nn.Module:
    """The seed tutorial's head: Linear -> ReLU -> Dropout -> Linear over the pooled [CLS]."""
    return nn.Sequential(
        nn.Linear(width, cfg.head_hidden),
        nn.ReLU(),
        nn.Dropout(cfg.head_dropout),
        nn.Linear(cfg.head_hidden, NUM_LABELS),
    )


def from_config(hf_config: PretrainedConfig, cfg: ModelConfig) -> nn.Module:
    """Architecture only (random weights): used for scratch models and to reload checkpoints."""
    net = AutoModelForSequenceClassification.from_config(hf_config, attn_implementation="sdpa")
    return _finish(net, cfg)


def build_network(cfg: ModelConfig, vocab_size: int, pad_id: int) -> nn.Module:
    if cfg.pretrained:
        return _finish(from_pretrained(cfg), cfg)
    return from_config(scratch_config(cfg, vocab_size, pad_id), cfg)


def from_pretrained(cfg: ModelConfig) -> nn.Module:
    """A hub model or a `caviar pretrain` folder, with a fresh classifier. model.dropout applies to
    it too (when its config has BERT's dropout keys), so fine-tuning can search it."""
    hf_config = AutoConfig.from_pretrained(cfg.pretrained, num_labels=NUM_LABELS)
    positions = getattr(hf_config, "max_position_embeddings", None)
    if positions is not None and cfg.max_len > positions:
        raise UserError(f"model.max_len ({cfg.max_len}) is more than {cfg.pretrained} has positions for ({positions})")
    for key in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
        if hasattr(hf_config, key):
            setattr(hf_config, key, cfg.dropout)
    return AutoModelForSequenceClassification.from_pretrained(
        cfg.pretrained, config=hf_config, attn_implementation="sdpa"
    )


WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def pretrained_origin(cfg: ModelConfig) -> dict | None:
    """Where a fine-tuned model's encoder came from, for its checkpoint and registry card: the
    folder or hub id, and for a local folder a sha256 of its weights (a hub id names its own)."""
    if not cfg.pretrained:
        return None
    folder = Path(cfg.pretrained)
    weights = next((folder / f for f in WEIGHT_FILES if (folder / f).is_file()), None)
    if weights is None:
        return {"source": cfg.pretrained, "fingerprint": None}
    return {"source": str(folder.resolve()), "fingerprint": fingerprint([weights])}


def _finish(net: nn.Module, cfg: ModelConfig) -> nn.Module:
    if cfg.head == "mlp":
        net.classifier = mlp_head(net.config.hidden_size, cfg)
    if cfg.freeze_base:
        for param in net.base_model.parameters():
            param.requires_grad_(False)
    return net


def load_hf_config(folder) -> PretrainedConfig:
    return AutoConfig.from_pretrained(folder)
