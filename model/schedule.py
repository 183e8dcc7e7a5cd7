"""Optimizer and learning-rate schedule: AdamW or SGD; constant, linear/cosine warmup, or cyclical."""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import (
    get_constant_schedule_with_warmup,
    get_cosine_schedule_with_warmup,
    get_linear_schedule_with_warmup,
)

from model.config import TrainConfig

NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight")
FUSED_ADAMW_DEVICES = ("cuda", "cpu")


def parameter_groups(net: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only: decaying biases and LayerNorm gains only hurts (BERT's recipe)."""
    decay, no_decay = [], []
    for name, param in net.named_parameters():
        if param.requires_grad:
            (no_decay if name.endswith(NO_DECAY) else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(net: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = parameter_groups(net, cfg.weight_decay)
    lr = cfg.effective_lr()
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum)
    # one fused kernel for the whole update instead of several per parameter: on a GPU it spares
    # kernel launches, on CPU the per-parameter Python loop (half a tiny model's step, measured
    # in bench/step_overhead.py)
    fused = next(net.parameters()).device.type in FUSED_ADAMW_DEVICES
    return torch.optim.AdamW(groups, lr=lr, betas=cfg.betas, eps=cfg.eps, fused=fused or None)


def cyclical_bounds(cfg: TrainConfig) -> tuple[float, float]:
    max_lr = cfg.max_lr or cfg.effective_lr()
    return (cfg.base_lr or max_lr / 10), max_lr


def build_schedule(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    warmup = math.ceil(cfg.warmup_ratio * total_steps)
    if cfg.schedule == "constant":
        return get_constant_schedule_with_warmup(optimizer, warmup)
    if cfg.schedule == "linear":
        return get_linear_schedule_with_warmup(optimizer, warmup, total_steps)
    if cfg.schedule == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, warmup, total_steps)
    base_lr, max_lr = cyclical_bounds(cfg)
    return torch.optim.lr_scheduler.CyclicLR(
        optimizer,
        base_lr=base_lr,
        max_lr=max_lr,
        step_size_up=max(1, round(cfg.cycle_epochs * steps_per_epoch)),
        mode=cfg.cyclical_mode,
        cycle_momentum=cfg.optimizer == "sgd",  # AdamW has no `momentum` key to cycle
    )
