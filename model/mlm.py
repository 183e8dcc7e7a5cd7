"""Masked-LM pretraining of the job's from-scratch BERT on the train split's own texts.

To run: caviar pretrain tune_jobs/nsmc_pretrained.yaml   (caviar/pretrain.py writes the folder)

The from-scratch model plateaus at ~86% on NSMC with labels alone; BERT's self-supervised stage,
run on the same 140k train reviews (never the validation or test ones), gives fine-tuning an
encoder that already knows the language. The model, tokenizer and encoded split are exactly the
ones fine-tuning uses (same WordPiece cache, same encoded-split cache), and the output is a
`BertForMaskedLM` that `model.pretrained: <folder>` loads like any hub checkpoint.

Masking is BERT's dynamic 15% (80% [MASK], 10% a random token, 10% unchanged), drawn afresh for
every batch on the device, on the encoded-split path (no per-step collator). Only the chosen
positions go through the vocabulary-sized output layer: that layer is most of an MLM step's cost.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import BertForMaskedLM, PreTrainedTokenizerBase

from model.bars import progress_bar
from model.batches import DeviceSplit, encode_cached, epoch_batches
from model.config import ModelConfig, PretrainConfig, TrainConfig, TrialConfig
from model.data import Splits, load_splits
from model.device import autocast, bf16_on, pick_device, seed_everything, set_threads
from model.electra import ElectraPair, electra_step
from model.errors import UserError
from model.masking import ROW_ALIGN, aligned_rows, mask_tokens
from model.network import scratch_config
from model.schedule import build_optimizer, build_schedule
from model.tokenizer import cached_wordpiece

OnLog = Callable[[dict], None]  # one point of the curve: {"step", "mlm_loss", "lr"} (+ "disc_loss", ...)


@dataclass
class Pretrained:
    net: torch.nn.Module  # what the folder holds: the BertForMaskedLM, or ELECTRA's discriminator
    tokenizer: PreTrainedTokenizerBase
    steps: int
    objective: str
    mlm_loss: float  # mean over the last log_every steps (the last logged point may cover fewer)
    disc_loss: float | None  # electra: the discriminator's loss, and its accuracy on every token
    replaced_accuracy: float | None
    original_share: float | None  # electra: the accuracy of answering "original" everywhere
    curve: list[dict] = field(default_factory=list)
    texts: int = 0  # train-split reviews read; nothing else is
    texts_sha256: str = ""
    examples_per_s: float = 0.0


def texts_sha256(texts) -> str:
    """What the pretraining read, as one hash: tests compare it against the train split alone."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass"))
        digest.update(b"\n")
    return digest.hexdigest()


def mlm_step(
    net: BertForMaskedLM, batch: dict, tokenizer, spec: PretrainConfig, gen, device, row_align: int | None = None
) -> torch.Tensor | None:
    """The MLM loss of one batch (None when no token was chosen, which only tiny batches see).
    `row_align` None: ROW_ALIGN in bf16, none in fp32."""
    mask = batch["attention_mask"]
    inputs, chosen, targets = mask_tokens(batch["input_ids"], mask, tokenizer, spec.mask_probability, gen)
    if targets.numel() == 0:
        return None
    row_align = row_align or (ROW_ALIGN if bf16_on(device, spec.precision) else 1)
    rows, targets = aligned_rows(chosen, targets, row_align)
    with autocast(device, spec.precision):
        hidden = net.bert(input_ids=inputs, attention_mask=mask).last_hidden_state
        logits = net.cls(hidden.flatten(0, 1)[rows])
    return torch.nn.functional.cross_entropy(logits.float(), targets, ignore_index=-100)


def mlm_update(
    net, batch: dict, tokenizer, spec: PretrainConfig, gen, device, optimizer, row_align: int | None = None
) -> torch.Tensor | None:
    """One optimizer step of pretraining (loss, backward, clip, update); None when nothing was chosen."""
    loss = mlm_step(net, batch, tokenizer, spec, gen, device, row_align)
    if loss is not None:
        optimizer_step(net, loss, spec, optimizer)
    return loss


def optimizer_step(net: torch.nn.Module, loss: torch.Tensor, spec: PretrainConfig, optimizer) -> None:
    """Backward, clip to pretrain.grad_clip, update: the same for either objective."""
    loss.backward()
    if spec.grad_clip:
        torch.nn.utils.clip_grad_norm_(net.parameters(), spec.grad_clip, foreach=True)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


class _Curve:
    """The last `every` figures of each kind stay on the device and are read (a host sync) once per
    `every` steps: one point. The run's final figures are the means of the last `every`, not the last
    point's: when the step count is not a multiple of `every`, that point covers only the leftover
    steps (often with an epoch's short last batch among them), too few to stand for the run."""

    def __init__(self, every: int, on_log: OnLog | None, bar):
        self.every, self.on_log, self.bar = every, on_log, bar
        self.points, self.counted = [], 0  # counted: steps since the last point
        self.recent: collections.deque[dict[str, torch.Tensor]] = collections.deque(maxlen=every)

    def mean_of_last(self, n: int) -> dict[str, float]:
        if not self.recent:
            return {"mlm_loss": float("nan")}
        last = list(self.recent)[-n:]
        return {k: float(torch.stack([r[k] for r in last]).float().mean()) for k in last[0]}

    def final(self) -> dict[str, float]:
        return self.mean_of_last(self.every)

    def add(self, figures: dict[str, torch.Tensor], step: int, total: int, lr: float) -> None:
        self.recent.append({k: v.detach() for k, v in figures.items()})
        self.counted += 1
        if step % self.every and step != total:
            return
        point = {"step": step, **self.mean_of_last(self.counted), "lr": lr}
        if not all(math.isfinite(v) for v in point.values()):
            raise UserError(f"pretrain: the loss went non-finite at step {step}; lower pretrain.lr")
        self.points.append(point)
        self.bar.set_postfix({k: f"{v:.3f}" for k, v in point.items() if k not in ("step", "lr")}, refresh=False)
        if self.on_log is not None:
            self.on_log(point)
        self.counted = 0


def mlm_network(model: ModelConfig, tokenizer: PreTrainedTokenizerBase) -> BertForMaskedLM:
    """The job's from-scratch BERT with an MLM head, sized to the tokenizer (fresh weights)."""
    net = BertForMaskedLM(scratch_config(model, len(tokenizer), tokenizer.pad_token_id))
    net.config.architectures = ["BertForMaskedLM"]
    return net


def pretrain(
    cfg: TrialConfig, spec: PretrainConfig, splits: Splits | None = None, on_log: OnLog | None = None, progress=False
) -> Pretrained:
    """Pretrain the BERT `cfg.model` shapes on the train split's texts for `spec`'s length, with its
    objective: masked-LM, or ELECTRA's generator and discriminator (model/electra.py)."""
    if cfg.model.pretrained:
        raise UserError("pretrain: model.pretrained is set; pretraining starts the job's from-scratch model")
    set_threads(cfg.train.num_threads)
    device = pick_device(cfg.train.device)
    seed_everything(spec.seed)
    splits = splits or load_splits(cfg.data)
    texts = splits.train.document.tolist()
    tokenizer = cached_wordpiece(texts, cfg.model.vocab_size)
    data = DeviceSplit(encode_cached(tokenizer, texts, splits.train.label, cfg.model.max_len), device)
    gen = torch.Generator(device=device).manual_seed(spec.seed)
    net, kept, update = _objective(cfg.model, spec, tokenizer, gen, device)

    steps_per_epoch = math.ceil(len(data) / spec.batch_size)
    total = max(1, math.ceil(spec.epochs * steps_per_epoch))
    total = min(total, spec.max_steps) if spec.max_steps else total
    optim_cfg = TrainConfig(lr=spec.lr, weight_decay=spec.weight_decay, warmup_ratio=spec.warmup_ratio)
    optimizer = build_optimizer(net, optim_cfg)
    schedule = build_schedule(optimizer, optim_cfg, total, steps_per_epoch)

    desc = f"pretrain ({spec.objective.upper()})"
    bar = progress_bar(total, desc, "step", progress)
    curve, step, seen, started = _Curve(spec.log_every, on_log, bar), 0, 0, time.perf_counter()
    batches = (b for epoch in range(math.ceil(total / steps_per_epoch)) for b in _epoch(data, spec, epoch))
    for width, rows in itertools.islice(batches, total):
        figures = update(data.batch(width, rows), optimizer)
        step, seen = step + 1, seen + len(rows)
        if figures is not None:
            curve.add(figures, step, total, schedule.get_last_lr()[0])
        schedule.step()
        bar.update(1)
    bar.close()
    final = curve.final()
    return Pretrained(
        net=kept.eval(),
        tokenizer=tokenizer,
        steps=step,
        objective=spec.objective,
        mlm_loss=final["mlm_loss"],
        disc_loss=final.get("disc_loss"),
        replaced_accuracy=final.get("replaced_accuracy"),
        original_share=final.get("original_share"),
        curve=curve.points,
        texts=len(texts),
        texts_sha256=texts_sha256(texts),
        examples_per_s=seen / max(time.perf_counter() - started, 1e-9),
    )


def _objective(model: ModelConfig, spec: PretrainConfig, tokenizer, gen: torch.Generator, device):
    """(the network trained, the one the folder keeps, one update: batch, optimizer -> its figures)."""
    if spec.objective == "electra":
        pair = ElectraPair(model, tokenizer, spec.generator_scale).to(device).train()

        def electra_update(batch: dict, optimizer) -> dict | None:
            figures = electra_step(pair, batch, tokenizer, spec, gen, device)
            if figures is not None:
                optimizer_step(pair, figures.pop("loss"), spec, optimizer)
            return figures

        return pair, pair.discriminator, electra_update
    net = mlm_network(model, tokenizer).to(device).train()

    def mlm_only(batch: dict, optimizer) -> dict | None:
        loss = mlm_update(net, batch, tokenizer, spec, gen, device, optimizer)
        return None if loss is None else {"mlm_loss": loss}

    return net, net, mlm_only


def _epoch(data: DeviceSplit, spec: PretrainConfig, epoch: int):
    return data.plan(epoch_batches(data.data, spec.batch_size, spec.seed, epoch))
