"""`caviar report`: what happened in an experiment, read from disk; works on a copied folder too.

To run: caviar report results/<experiment> [--evaluate-top 3] [--json]

Writes leaderboard.csv / leaderboard.md, report.json and three PNG plots into the experiment
folder. Validation chooses the model; `--evaluate-top K` only reports the test file's verdict.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from caviar.experiment import plots
from caviar.experiment.prune import folder_bytes
from caviar.experiment.record import Experiment, TrialRecord
from caviar.job.schema import JobSpec
from model.errors import UserError
from model.files import write_json_atomically, write_text_atomically

LEADERBOARD_CSV, LEADERBOARD_MD, REPORT_FILE = "leaderboard.csv", "leaderboard.md", "report.json"
PLOTS = ("learning_curves.png", "params_vs_metric.png", "parallel_coordinates.png")


def trial_row(trial: TrialRecord, job: JobSpec) -> dict:
    metric, mode = job.metric, job.mode
    best = trial.best_row(metric, mode)
    last = trial.history.iloc[-1] if len(trial.history) else {}
    wall = float(last.get("time_total_s", math.nan)) if len(trial.history) else math.nan
    checkpoint = trial.best_checkpoint(metric, mode)
    return {
        "trial_id": trial.trial_id,
        "status": trial.status,
        "evaluations": trial.evaluations,
        "round": trial.round,
        "stopped_at_rung": trial.evaluations if trial.stopped_early else None,
        "cut_by_budget": trial.cut_by_budget,
        f"best_{metric}": None if best is None else float(best[metric]),
        "best_evaluation": None if best is None else int(best["training_iteration"]),
        "val_accuracy_at_best": None if best is None else float(best["val_accuracy"]),
        "val_loss_at_best": None if best is None else float(best["val_loss"]),
        "wall_s": wall,
        "cpu_s": wall * job.resources_per_trial.cpu,
        "gpu_s": wall * job.resources_per_trial.gpu,
        "checkpoint_bytes": sum(folder_bytes(c) for c in trial.checkpoints()),
        "checkpoint": str(checkpoint) if checkpoint else "",
        **trial.params,
    }


def leaderboard(experiment: Experiment) -> pd.DataFrame:
    """One row per trial in the experiment's ranking; trials that never reported come last."""
    ranked = [t for t, _ in experiment.ranked()]
    unranked = [t for t in experiment.trials() if t not in ranked]
    board = pd.DataFrame([trial_row(t, experiment.job) for t in ranked + unranked])
    board.insert(0, "rank", range(1, len(board) + 1))
    return board


def evaluate_top(board: pd.DataFrame, job: JobSpec, k: int) -> pd.DataFrame:
    """Test accuracy and F1 of the K best checkpoints: reported, never used to choose."""
    from model.data import load_splits
    from model.evaluate import evaluate_checkpoint

    test = load_splits(job.data).test
    board = board.copy()
    board["test_accuracy"], board["test_f1"] = math.nan, math.nan
    for i in board.index[:k]:
        if board.loc[i, "checkpoint"]:
            metrics = evaluate_checkpoint(Path(board.loc[i, "checkpoint"]), test)
            board.loc[i, ["test_accuracy", "test_f1"]] = [metrics.accuracy, metrics.f1]
    return board


def markdown(board: pd.DataFrame, columns: list[str]) -> str:
    def cell(v) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row[c]) for c in columns) + " |" for _, row in board.iterrows()]
    return "\n".join(lines) + "\n"


def write_report(experiment_dir: Path, evaluate_top_k: int | None = None) -> dict:
    experiment_dir = Path(experiment_dir)
    if not experiment_dir.is_dir():
        raise UserError(f"{experiment_dir}: no such experiment folder")
    experiment = Experiment.load(experiment_dir)
    job, trials = experiment.job, experiment.trials()
    if not any(len(t.history) for t in trials):
        raise UserError(f"{experiment_dir}: no trial has reported yet")
    board = leaderboard(experiment)
    if evaluate_top_k:
        board = evaluate_top(board, job, evaluate_top_k)
    params = list(job.search_space)
    log_params = {k for k, d in job.search_space.items() if d.kind == "loguniform"}
    columns = [c for c in board.columns if c != "checkpoint"]

    write_text_atomically(experiment_dir / LEADERBOARD_CSV, board.to_csv(index=False))
    write_text_atomically(experiment_dir / LEADERBOARD_MD, f"# {experiment_dir.name}\n\n" + markdown(board, columns))
    reported = board[board[f"best_{job.metric}"].notna()]
    plots.learning_curves(trials, job.metric, experiment_dir / PLOTS[0])
    plots.params_vs_metric(reported, params, log_params, job.metric, experiment_dir / PLOTS[1])
    plots.parallel_coordinates(reported, params, log_params, job.metric, experiment_dir / PLOTS[2])

    best = board.iloc[0]
    report = {
        "experiment_dir": str(experiment_dir.resolve()),
        "job": job.name,
        "metric": job.metric,
        "mode": job.mode,
        "best": {
            "trial_id": best["trial_id"],
            "params": {p: _plain(best[p]) for p in params},
            job.metric: _plain(best[f"best_{job.metric}"]),
            "evaluation": _plain(best["best_evaluation"]),
            "checkpoint": best["checkpoint"],
            **({"test_accuracy": _plain(best["test_accuracy"])} if "test_accuracy" in board else {}),
        },
        "trials": [{k: _plain(v) for k, v in row.items()} for _, row in board.iterrows()],
        "files": [LEADERBOARD_CSV, LEADERBOARD_MD, REPORT_FILE, *PLOTS],
    }
    write_json_atomically(experiment_dir / REPORT_FILE, report)
    report["table"] = markdown(board.head(15), _table_columns(board, params, job.metric))
    return report


def _table_columns(board: pd.DataFrame, params: list[str], metric: str) -> list[str]:
    wanted = ["rank", "trial_id", "status", "evaluations", f"best_{metric}", "best_evaluation", "test_accuracy"]
    return [c for c in wanted if c in board] + params


def _plain(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value
