"""Metrics of a classifier over an encoded split: loss, accuracy, F1 of 긍정, confusion matrix."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model.batches import DeviceSplit, encode_cached, eval_batches
from model.checkpoint import load_checkpoint
from model.device import autocast, pick_device

EVAL_BATCH = 256


@dataclass
class Metrics:
    loss: float
    accuracy: float
    f1: float
    confusion: list[list[int]]  # rows = true label (부정, 긍정), columns = predicted

    def as_dict(self, stage: str) -> dict:
        return {f"{stage}_{k}": v for k, v in asdict(self).items()}


def confusion_metrics(labels: np.ndarray, predicted: np.ndarray, loss: float) -> Metrics:
    confusion = np.zeros((2, 2), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    tp, fp, fn = confusion[1, 1], confusion[0, 1], confusion[1, 0]
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return Metrics(
        loss=float(loss),
        accuracy=float((labels == predicted).mean()),
        f1=float(f1),
        confusion=confusion.tolist(),
    )


@torch.no_grad()
def positive_probabilities(net: nn.Module, split: DeviceSplit, batch_size: int = EVAL_BATCH) -> np.ndarray:
    """P(긍정) per review, in the order of the split; one copy to the host at the end."""
    was_training = net.training
    net.eval()
    batches = eval_batches(split.data, batch_size)
    device = split.device
    out = []
    for width, rows in split.plan(batches):
        batch = split.batch(width, rows)
        with autocast(device):  # fp32 on CPU whatever training used: the served figures
            logits = net(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        out.append(torch.softmax(logits.float(), dim=-1)[:, 1])
    net.train(was_training)
    probs = np.empty(len(split), dtype=np.float64)
    if batches:
        probs[np.concatenate(batches)] = torch.cat(out).double().cpu().numpy()
    return probs


def evaluate(net: nn.Module, split: DeviceSplit, batch_size: int = EVAL_BATCH) -> Metrics:
    return scored(net, split, batch_size)[0]


def scored(net: nn.Module, split: DeviceSplit, batch_size: int = EVAL_BATCH) -> tuple[Metrics, np.ndarray]:
    """The metrics and P(긍정) per review: a kept checkpoint stores the latter (model/predictions.py)."""
    probs = positive_probabilities(net, split, batch_size)
    return metrics_of(np.asarray(split.data.labels), probs), probs


def metrics_of(labels: np.ndarray, probs: np.ndarray) -> Metrics:
    labels = np.asarray(labels, dtype=np.int64)
    p_true = np.clip(np.where(labels == 1, probs, 1 - probs), 1e-12, 1.0)
    loss = float(-np.log(p_true).mean())
    return confusion_metrics(labels, (probs >= 0.5).astype(np.int64), loss)


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)


def evaluate_checkpoint(folder, reviews, device=None) -> Metrics:
    """Metrics of a saved checkpoint on a split (a DataFrame with `document` and `label`)."""
    device = device or pick_device("auto")
    loaded = load_checkpoint(folder)
    data = encode_cached(loaded.tokenizer, reviews.document, reviews.label, loaded.config.model.max_len)
    return evaluate(loaded.net.to(device), DeviceSplit(data, device))
