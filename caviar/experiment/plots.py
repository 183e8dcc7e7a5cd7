"""The stages' pictures (the LR range test, pretraining's loss) and what every picture shares:
matplotlib without a display, each PNG written atomically. An experiment's own are in trial_plots.py."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on clusters
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from model.files import atomic_path  # noqa: E402


def save(fig, path: Path) -> Path:
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def lr_find(result: dict, path: Path) -> Path:
    """Loss (raw and smoothed) and val accuracy against the learning rate, with the suggested bounds."""
    fig, ax = plt.subplots(figsize=(8, 5))
    ax.plot(result["lrs"], result["losses"], color="lightgray", lw=0.8, label="train loss (per step)")
    ax.plot(result["lrs"], result["smoothed_losses"], color="C0", lw=2, label="train loss (smoothed)")
    ax.set_xscale("log" if result["mode"] == "exp" else "linear")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("train loss")
    losses = np.asarray(result["smoothed_losses"])
    ax.set_ylim(losses.min() - 0.05, min(losses.max(), 3 * losses[: max(1, len(losses) // 10)].mean()) + 0.05)
    if result["val_lrs"]:
        acc = ax.twinx()
        acc.plot(result["val_lrs"], result["val_accuracies"], "o-", color="C2", ms=3, label="val accuracy")
        acc.set_ylabel("val accuracy", color="C2")
    for key, color in (("base_lr", "C1"), ("max_lr", "C3")):
        ax.axvline(result[key], color=color, ls="--", label=f"{key} = {result[key]:.2e}")
    ax.legend(loc="lower left")
    ax.set_title("LR range test")
    ax.grid(alpha=0.3, which="both")
    return save(fig, path)


def mlm_loss(curve: list[dict], path: Path) -> Path:
    """The pretraining curve against the step: the MLM loss (ELECTRA's generator's), and for ELECTRA
    the discriminator's loss beside it; the learning rate on its own axis. ELECTRA gets a second
    panel: the discriminator's accuracy against answering "original" everywhere, the line it must
    clear to have learned anything."""
    electra = "disc_loss" in curve[0]
    fig, axes = plt.subplots(1, 2 if electra else 1, figsize=(14 if electra else 8, 4.5), squeeze=False)
    ax = axes[0][0]
    steps = [p["step"] for p in curve]
    ax.plot(
        steps, [p["mlm_loss"] for p in curve], color="C0", lw=2, label="generator MLM loss" if electra else "MLM loss"
    )
    if electra:
        ax.plot(steps, [p["disc_loss"] for p in curve], color="C2", lw=2, label="discriminator loss (every token)")
        ax.legend(loc="upper right")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    lr = ax.twinx()
    lr.plot(steps, [p["lr"] for p in curve], color="C1", lw=1, ls="--", label="lr")
    lr.set_ylabel("learning rate", color="C1")
    ax.set_title("ELECTRA pretraining (replaced-token detection)" if electra else "masked-LM pretraining")
    ax.grid(alpha=0.3)
    if electra and "original_share" in curve[0]:
        acc = axes[0][1]
        acc.plot(steps, [p["replaced_accuracy"] for p in curve], color="C2", lw=2, label="discriminator accuracy")
        acc.plot(steps, [p["original_share"] for p in curve], color="grey", ls=":", label="answering 'original' always")
        acc.set_xlabel("step")
        acc.set_ylabel("accuracy over every token")
        acc.set_title("has the discriminator learned? (above the dotted line)")
        acc.legend(loc="lower right")
        acc.grid(alpha=0.3)
    return save(fig, path)
