"""The classifier: a from-scratch BERT sized by the job, or a pretrained encoder; linear or MLP head.

Both are rebuilt from a transformers config alone (`from_config`), so a checkpoint loads offline
even when it started from the hub.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, BertConfig, PretrainedConfig

from model.config import ModelConfig
from model.data import fingerprint
from model.errors import UserError, short
from model.remote import is_uri, model_source

log = logging.getLogger("caviar.model")

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


def from_config(hf_config: PretrainedConfig, cfg: ModelConfig, device: str | None = None) -> nn.Module:
    """Architecture only (random weights): used for scratch models and to reload checkpoints. On the
    meta device it allocates nothing, which is how a checkpoint's config.json is sized first."""
    with torch.device(device) if device else contextlib.nullcontext():
        net = AutoModelForSequenceClassification.from_config(hf_config, attn_implementation="sdpa")
        return _finish(net, cfg)


TRAINING_BYTES_PER_PARAMETER = 16  # fp32 weights, gradients and AdamW's two moments


def parameter_count(cfg: ModelConfig, vocab_size: int | None = None) -> int:
    """A from-scratch BERT's parameters, from its shape alone: embeddings, layers, pooler, head."""
    h, i = cfg.hidden, cfg.intermediate
    embeddings = ((vocab_size or cfg.vocab_size) + cfg.max_len + 1) * h + 2 * h
    layer = 4 * h * h + 4 * h + 2 * h * i + i + h + 4 * h  # attention, feed-forward, two LayerNorms
    return embeddings + cfg.layers * layer + h * h + h + h * NUM_LABELS + NUM_LABELS


def check_fits(cfg: ModelConfig, vocab_size: int | None = None) -> None:
    """Refuse, before building it, a from-scratch model whose training state alone exceeds the memory
    this machine has free (activations come on top)."""
    if cfg.pretrained:
        return
    params = parameter_count(cfg, vocab_size)
    need, free = params * TRAINING_BYTES_PER_PARAMETER, available_memory_bytes()
    if free is not None and need > free:
        raise UserError(
            f"model: {params / 1e6:,.0f}M parameters need {need / 2**30:,.1f} GiB to train (weights, gradients, "
            f"AdamW's moments), but {free / 2**30:,.1f} GiB are free; "
            "shrink model.layers, hidden, intermediate or vocab_size"
        )


def available_memory_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def build_network(cfg: ModelConfig, vocab_size: int, pad_id: int) -> nn.Module:
    if cfg.pretrained:
        return _finish(from_pretrained(cfg), cfg)
    check_fits(cfg, vocab_size)
    return from_config(scratch_config(cfg, vocab_size, pad_id), cfg)


def pretrained_config(source: str, **overrides) -> PretrainedConfig:
    """The transformers config of `model.pretrained`: a folder holding config.json, or a hub id that
    answers, or a folder on object storage (fetched into the cache). Anything else is one line naming
    the value, not transformers' traceback."""
    source = model_source(source)
    folder = Path(source).expanduser()
    local = folder.exists() or source.startswith((".", "/", "~")) or source.count("/") > 1
    if local and not (folder / "config.json").is_file():
        raise UserError(
            f"model.pretrained={short(source, 120)}: expected a model folder holding config.json "
            f"({'no such folder' if not folder.exists() else 'it has none'}), or a hub id such as klue/bert-base"
        )
    try:
        return AutoConfig.from_pretrained(source, **overrides)
    except (OSError, ValueError) as err:  # HFValidationError is a ValueError; no network is an OSError
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"model.pretrained={short(source, 120)}: not a local model folder, and the hub says: {short(first, 160)}"
        ) from None


def from_pretrained(cfg: ModelConfig) -> nn.Module:
    """A hub model or a `caviar pretrain` folder, with a fresh classifier. model.dropout applies to
    it too (when its config has BERT's dropout keys), so fine-tuning can search it."""
    hf_config = pretrained_config(cfg.pretrained, num_labels=NUM_LABELS)
    positions = getattr(hf_config, "max_position_embeddings", None)
    if positions is not None and cfg.max_len > positions:
        raise UserError(f"model.max_len ({cfg.max_len}) is more than {cfg.pretrained} has positions for ({positions})")
    for key in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
        if hasattr(hf_config, key):
            setattr(hf_config, key, cfg.dropout)
    with _quiet_transformers():
        net, info = AutoModelForSequenceClassification.from_pretrained(
            model_source(cfg.pretrained), config=hf_config, attn_implementation="sdpa", output_loading_info=True
        )
    if note := load_note(cfg.pretrained, info, net.base_model_prefix):
        log.warning(note)
    return net


@contextlib.contextmanager
def _quiet_transformers():
    """transformers prints a LOAD REPORT table (raw escape codes included) and a progress bar on
    every fine-tune, most of it the head the fine-tune replaces: load_note keeps what matters."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def load_note(source: str, info: dict, prefix: str) -> str | None:
    """One line when the encoder did not load whole, else None. A new classifier (and the pooler an
    MLM folder lacks) is expected, and so are a pretraining head's leftovers outside the encoder."""
    inside = f"{prefix}."
    lost = [k for k in info.get("missing_keys", ()) if k.startswith(inside) and ".pooler." not in k]
    extra = [k for k in info.get("unexpected_keys", ()) if k.startswith(inside)]
    mismatched = [k[0] if isinstance(k, tuple | list) else str(k) for k in info.get("mismatched_keys", ())]
    parts = [
        f"{len(keys)} encoder weights {what} (first: {keys[0]})"
        for keys, what in (
            (sorted(lost), "were not in it and start random"),
            (sorted(extra), "in it fit no layer of the model and were left out"),
            (sorted(mismatched), "had another shape and start random"),
        )
        if keys
    ]
    return f"model.pretrained={short(source, 120)}: {'; '.join(parts)}" if parts else None


WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def pretrained_origin(cfg: ModelConfig) -> dict | None:
    """Where a fine-tuned model's encoder came from, for its checkpoint and registry card: the
    folder or hub id, and for a local folder a sha256 of its weights (a hub id names its own)."""
    if not cfg.pretrained:
        return None
    folder = Path(model_source(cfg.pretrained))
    weights = next((folder / f for f in WEIGHT_FILES if (folder / f).is_file()), None)
    if weights is None:
        return {"source": cfg.pretrained, "fingerprint": None}
    source = cfg.pretrained if is_uri(cfg.pretrained) else str(folder.resolve())  # a URI: the same on every node
    return {"source": source, "fingerprint": fingerprint([weights])}


def _finish(net: nn.Module, cfg: ModelConfig) -> nn.Module:
    if cfg.head == "mlp":
        net.classifier = mlp_head(net.config.hidden_size, cfg)
    if cfg.freeze_base:
        for param in net.base_model.parameters():
            param.requires_grad_(False)
    return net


def load_hf_config(folder) -> PretrainedConfig:
    return AutoConfig.from_pretrained(folder)
