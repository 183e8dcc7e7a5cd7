"""The report's pictures: learning curves with ASHA's stops, each hyperparameter against the metric,
and parallel coordinates. One PNG each, written atomically."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on clusters
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from caviar.experiment.record import TrialRecord  # noqa: E402
from model.files import atomic_path  # noqa: E402


def _save(fig, path: Path) -> Path:
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def learning_curves(trials: list[TrialRecord], metric: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8, 5))
    for trial in trials:
        h = trial.history
        if metric not in h or h.empty:
            continue
        (line,) = ax.plot(h["training_iteration"], h[metric], alpha=0.8, lw=1.4)
        if trial.stopped_early or trial.cut_by_budget:
            last, mark = h.iloc[-1], "x" if trial.stopped_early else "|"
            x, y = last["training_iteration"], last[metric]
            ax.scatter([x], [y], marker=mark, s=80, linewidths=2, color=line.get_color(), zorder=3)
    ax.scatter([], [], marker="x", color="gray", label="stopped early by the scheduler")
    if any(t.cut_by_budget for t in trials):
        ax.scatter([], [], marker="|", s=80, linewidths=2, color="gray", label="cut by the time budget")
    ax.set_xlabel("evaluation (training_iteration)")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} of every trial")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    return _save(fig, path)


def params_vs_metric(board: pd.DataFrame, params: list[str], log_params: set[str], metric: str, path: Path) -> Path:
    cols = max(1, min(3, len(params)))
    rows = max(1, int(np.ceil(len(params) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, param in zip(axes.flat, params, strict=False):
        values = board[param]
        if pd.api.types.is_numeric_dtype(values):
            ax.scatter(values, board[f"best_{metric}"], alpha=0.8)
            if param in log_params:
                ax.set_xscale("log")
        else:
            cats = sorted(values.astype(str).unique())
            xs = [cats.index(v) for v in values.astype(str)]
            ax.scatter(xs, board[f"best_{metric}"], alpha=0.8)
            ax.set_xticks(range(len(cats)), cats, rotation=20)
        ax.set_xlabel(param + (" (log)" if param in log_params else ""))
        ax.set_ylabel(f"best {metric}")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(params) :]:
        ax.axis("off")
    if not params:
        axes.flat[0].text(0.5, 0.5, "no search space", ha="center")
    fig.suptitle(f"each hyperparameter against the best {metric}")
    fig.tight_layout()
    return _save(fig, path)


def parallel_coordinates(board: pd.DataFrame, params: list[str], log_params: set[str], metric: str, path: Path):
    """One line per trial across normalized axes, colored by the metric: where the good region is."""
    axes_cols = [*params, f"best_{metric}"]
    scaled = pd.DataFrame(index=board.index)
    ticks = {}
    for col in axes_cols:
        values = board[col]
        if not pd.api.types.is_numeric_dtype(values):
            cats = sorted(values.astype(str).unique())
            values = values.astype(str).map(cats.index).astype(float)
            ticks[col] = cats
        elif col in log_params:
            values = np.log10(values.astype(float))
        lo, hi = values.min(), values.max()
        scaled[col] = 0.5 if hi == lo else (values - lo) / (hi - lo)
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(axes_cols)), 4.5))
    metric_values = board[f"best_{metric}"].astype(float)
    norm = plt.Normalize(metric_values.min(), metric_values.max())
    cmap = plt.get_cmap("viridis")
    for i in board.index:
        ax.plot(range(len(axes_cols)), scaled.loc[i, axes_cols], color=cmap(norm(metric_values[i])), alpha=0.8)
    ax.set_xticks(range(len(axes_cols)), [c + (" (log)" if c in log_params else "") for c in axes_cols], rotation=15)
    ax.set_yticks([0, 1], ["low", "high"])
    for x, col in enumerate(axes_cols):
        ax.axvline(x, color="gray", lw=0.6)
        if col in ticks:
            for j, cat in enumerate(ticks[col]):
                ax.text(x + 0.03, j / max(1, len(ticks[col]) - 1), cat, fontsize=7)
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=f"best {metric}")
    ax.set_title("parallel coordinates (normalized)")
    return _save(fig, path)


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
    return _save(fig, path)


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
    return _save(fig, path)
