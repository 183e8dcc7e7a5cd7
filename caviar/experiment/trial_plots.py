"""An experiment's pictures, all in one look: each trial keeps its colour in every plot, the best
trial is drawn bold, and every title says the metric and which way is better.

learning_curves.png       the metric at every evaluation, each trial labelled, the scheduler's stops marked
optimization_history.png  each trial's best in start order, and the running best
params_vs_metric.png      each hyperparameter against the best metric
parallel_coordinates.png  every trial across its hyperparameters, axes labelled with their values
param_importance.png      fANOVA's share of the metric's variance per hyperparameter (experiment/importance.py)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from caviar.experiment.importance import Importance
from caviar.experiment.plots import plt, save
from caviar.experiment.record import TrialRecord

LEGEND_UP_TO = 30  # trials; past this the legend names the best ten


@dataclass(frozen=True)
class Look:
    """What the plots of one experiment share."""

    metric: str
    mode: str
    best: str | None  # the best trial's id
    colors: dict[str, tuple]  # trial id -> its colour, in every plot

    @classmethod
    def of(cls, trial_ids: list[str], metric: str, mode: str, best: str | None) -> Look:
        palette = plt.get_cmap("tab10" if len(trial_ids) <= 10 else "tab20" if len(trial_ids) <= 20 else "turbo")
        n = max(1, len(trial_ids))
        spread = [i / max(1, n - 1) for i in range(n)] if n > 20 else range(n)
        return cls(metric, mode, best, {t: palette(x) for t, x in zip(trial_ids, spread, strict=False)})

    @property
    def direction(self) -> str:
        return "higher is better" if self.mode == "max" else "lower is better"

    def label(self, trial_id: str) -> str:
        return trial_id + (" (best)" if trial_id == self.best else "")

    def line(self, trial_id: str) -> dict:
        """Plot keywords: the best trial bold and on top, the rest thin."""
        if trial_id == self.best:
            return {"color": self.colors.get(trial_id, "k"), "lw": 3.0, "alpha": 1.0, "zorder": 4}
        return {"color": self.colors.get(trial_id, "gray"), "lw": 1.2, "alpha": 0.75, "zorder": 2}


def learning_curves(trials: list[TrialRecord], look: Look, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(9, 5.5))
    drawn = []
    for trial in trials:
        h = trial.history
        if look.metric not in h or h.empty:
            continue
        ax.plot(h["training_iteration"], h[look.metric], label=look.label(trial.trial_id), **look.line(trial.trial_id))
        drawn.append(trial.trial_id)
        if trial.stopped_early or trial.cut_by_budget:
            last = h.iloc[-1]
            mark = "x" if trial.stopped_early else "|"
            ax.scatter(
                [last["training_iteration"]], [last[look.metric]], marker=mark, s=80, linewidths=2, **_dot(look, trial)
            )
    ax.scatter([], [], marker="x", color="gray", label="stopped early by the scheduler")
    if any(t.cut_by_budget for t in trials):
        ax.scatter([], [], marker="|", s=80, linewidths=2, color="gray", label="cut by the time budget")
    ax.set_xlabel("evaluation (training_iteration)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(look.metric)
    ax.set_title(f"{look.metric} of every trial ({look.direction}); best trial bold")
    ax.grid(alpha=0.3)
    _legend(ax, drawn)
    return save(fig, path)


def optimization_history(board: pd.DataFrame, order: list[str], look: Look, path: Path) -> Path:
    """Each trial's best metric in the order the trials started, and the best so far after each."""
    best_col = f"best_{look.metric}"
    scored = board.set_index("trial_id")[best_col].dropna()
    ids = [t for t in order if t in scored.index]
    values = np.array([scored[t] for t in ids], dtype=float)
    fig, ax = plt.subplots(figsize=(9, 5))
    xs = np.arange(1, len(ids) + 1)
    running = np.maximum.accumulate(values) if look.mode == "max" else np.minimum.accumulate(values)
    ax.step(xs, running, where="post", color="k", lw=1.5, label="best so far")
    for x, trial_id, value in zip(xs, ids, values, strict=True):
        size = 140 if trial_id == look.best else 50
        ax.scatter([x], [value], s=size, color=look.colors.get(trial_id), edgecolors="k", zorder=3)
    if look.best in ids:
        ax.annotate(
            look.label(look.best),
            (ids.index(look.best) + 1, scored[look.best]),
            xytext=(6, 6),
            textcoords="offset points",
            fontsize=8,
        )
    ax.set_xlabel("trial, in start order")
    ax.set_ylabel(f"best {look.metric}")
    ax.set_title(f"optimization history: best {look.metric} of each trial ({look.direction})")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    return save(fig, path)


def params_vs_metric(board: pd.DataFrame, params: list[str], log_params: set[str], look: Look, path: Path) -> Path:
    cols = max(1, min(3, len(params)))
    rows = max(1, int(np.ceil(len(params) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    colors = [look.colors.get(t, "gray") for t in board["trial_id"]]
    sizes = [120 if t == look.best else 40 for t in board["trial_id"]]
    for ax, param in zip(axes.flat, params, strict=False):
        values = board[param]
        if pd.api.types.is_numeric_dtype(values):
            xs = values
            if param in log_params:
                ax.set_xscale("log")
        else:
            cats = sorted(values.astype(str).unique())
            xs = [cats.index(v) for v in values.astype(str)]
            ax.set_xticks(range(len(cats)), cats, rotation=20)
        ax.scatter(xs, board[f"best_{look.metric}"], c=colors, s=sizes, edgecolors="k", linewidths=0.5)
        ax.set_xlabel(param + (" (log)" if param in log_params else ""))
        ax.set_ylabel(f"best {look.metric}")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(params) :]:
        ax.axis("off")
    if not params:
        axes.flat[0].text(0.5, 0.5, "no search space", ha="center")
    fig.suptitle(f"each hyperparameter against the best {look.metric} ({look.direction}); best trial large")
    fig.tight_layout()
    return save(fig, path)


def parallel_coordinates(board: pd.DataFrame, params: list[str], log_params: set[str], look: Look, path: Path):
    """One line per trial across the hyperparameters and the metric; each axis labelled with values."""
    axes_cols = [*params, f"best_{look.metric}"]
    scaled, ticks = pd.DataFrame(index=board.index), {}
    for col in axes_cols:
        scaled[col], ticks[col] = _axis(board[col], col in log_params)
    fig, ax = plt.subplots(figsize=(max(6, 2.2 * len(axes_cols)), 5))
    for i in board.index:
        trial_id = board.loc[i, "trial_id"]
        ax.plot(range(len(axes_cols)), scaled.loc[i, axes_cols], label=look.label(trial_id), **look.line(trial_id))
    for x, col in enumerate(axes_cols):
        ax.axvline(x, color="gray", lw=0.6)
        for position, text in ticks[col]:
            ax.text(x - 0.04, position, text, fontsize=7, ha="right", va="center", color="dimgray")
    ax.set_xticks(range(len(axes_cols)), [c + (" (log)" if c in log_params else "") for c in axes_cols], rotation=12)
    ax.set_yticks([])
    ax.set_xlim(-0.6, len(axes_cols) - 0.8)
    ax.set_title(f"parallel coordinates: every trial, best {look.metric} on the right ({look.direction})")
    _legend(ax, list(board["trial_id"]))
    return save(fig, path)


def param_importance(importance: Importance, look: Look, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 0.6 * max(3, len(importance.by_param)) + 1.2))
    names = list(importance.by_param)[::-1]
    if names:
        ax.barh(names, [importance.by_param[n] for n in names], color="C0")
        ax.set_xlim(0, 1)
        ax.set_xlabel(f"share of the variance of {look.metric} (fANOVA)")
    else:
        ax.text(0.5, 0.5, importance.note, ha="center", va="center", wrap=True)
        ax.axis("off")
    early = f", {importance.stopped_early} stopped early" if importance.stopped_early else ""
    title = f"hyperparameter importance for {look.metric} ({look.direction})\n"
    title += f"rests on {importance.trials} trials, each at its best evaluation{early}"
    if importance.note and names:
        title += f"\n{importance.note}"
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save(fig, path)


def _axis(values: pd.Series, log: bool) -> tuple[pd.Series, list[tuple[float, str]]]:
    """The values scaled to 0..1, and (position, label) ticks in the values' own units."""
    if not pd.api.types.is_numeric_dtype(values):
        cats = sorted(values.astype(str).unique())
        span = max(1, len(cats) - 1)
        return values.astype(str).map(cats.index).astype(float) / span, [(j / span, c) for j, c in enumerate(cats)]
    raw = values.astype(float)
    shown = np.log10(raw) if log else raw
    lo, hi = float(shown.min()), float(shown.max())
    if hi == lo:
        return pd.Series(0.5, index=values.index), [(0.5, _number(raw.iloc[0]))]
    ticks = [(f, _number(10 ** (lo + f * (hi - lo)) if log else lo + f * (hi - lo))) for f in (0, 0.25, 0.5, 0.75, 1)]
    return (shown - lo) / (hi - lo), ticks


def _number(value: float) -> str:
    return f"{value:.3g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"


def _dot(look: Look, trial: TrialRecord) -> dict:
    return {"color": look.colors.get(trial.trial_id, "gray"), "zorder": 5}


def _legend(ax, drawn: list[str]) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if len(drawn) > LEGEND_UP_TO:
        keep = set(drawn[:10])  # the trials come best first
        pairs = [(h, lb) for h, lb in zip(handles, labels, strict=True) if lb.split(" ")[0] in keep or lb not in drawn]
        handles, labels = [h for h, _ in pairs], [lb for _, lb in pairs]
    ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
