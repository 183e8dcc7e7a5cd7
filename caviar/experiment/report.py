"""`caviar report`: what happened in an experiment, read from disk; works on a copied folder too.

To run: caviar report results/<experiment> [--evaluate-top 3] [--json]

Writes leaderboard.csv / leaderboard.md, report.json and five PNG plots (experiment/trial_plots.py)
into the experiment folder. Validation chooses the model; `--evaluate-top K` only reports the test file's verdict.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from caviar.experiment import trial_plots
from caviar.experiment.importance import Importance, fanova
from caviar.experiment.layout import LEADERBOARD_CSV, LEADERBOARD_MD, PLOTS, REPORT_FILE
from caviar.experiment.object_store import known_as, mirror_of
from caviar.experiment.record import Experiment
from caviar.experiment.report_record import BestTrial, Report, ShownReport
from caviar.experiment.rows import trial_row
from caviar.experiment.selection import standings
from caviar.experiment.trial_plots import Look
from caviar.job.schema import JobSpec
from model.data import load_splits
from model.errors import UserError
from model.evaluate import evaluate_checkpoint
from model.files import write_json_atomically, write_text_atomically


def leaderboard(experiment: Experiment) -> pd.DataFrame:
    """One row per trial in the experiment's ranking; trials that never reported come last."""
    ranked = [t for t, _ in experiment.ranked()]
    unranked = [t for t in experiment.trials() if t not in ranked]
    standing = standings(experiment)
    board = pd.DataFrame(
        [trial_row(t, experiment.job, standing.get(t.trial_id)).as_columns() for t in ranked + unranked]
    )
    board.insert(0, "rank", range(1, len(board) + 1))
    return board


def local_checkpoint(shown: str, folder: Path) -> Path:
    """The leaderboard's checkpoint as a folder here: on object storage, fetched into the mirror."""
    mirror = mirror_of(folder)
    return Path(shown) if mirror is None else mirror.complete(mirror.local_of(shown))


def evaluate_top(board: pd.DataFrame, job: JobSpec, k: int, folder: Path) -> tuple[pd.DataFrame, list[str]]:
    """Test accuracy and F1 of the K best checkpoints: reported, never used to choose. Also the
    lines that say which of the K had no checkpoint left to score."""
    test = load_splits(job.data).test
    board = board.copy()
    board["test_accuracy"], board["test_f1"] = math.nan, math.nan
    notes = []
    for i in board.index[:k]:
        if board.loc[i, "checkpoint"]:
            metrics = evaluate_checkpoint(local_checkpoint(board.loc[i, "checkpoint"], folder), test)
            board.loc[i, ["test_accuracy", "test_f1"]] = [metrics.accuracy, metrics.f1]
            continue
        why = (
            f"checkpoint.keep_best_trials is {job.checkpoint.keep_best_trials}"
            if job.checkpoint.keep_best_trials is not None
            else "it kept none"
        )
        notes.append(
            f"rank {board.loc[i, 'rank']} ({board.loc[i, 'trial_id']}): not scored on test, no checkpoint ({why})"
        )
    return board, notes


def damage_notes(trials) -> list[str]:
    """One line per damaged checkpoint a trial's row passed over: the report goes on without it."""
    return [f"trial {t.trial_id}: a checkpoint was passed over, {line}" for t in trials for line in t.damage]


def markdown(board: pd.DataFrame, columns: list[str]) -> str:
    def cell(v) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row[c]) for c in columns) + " |" for _, row in board.iterrows()]
    return "\n".join(lines) + "\n"


def write_report(experiment_dir: Path, evaluate_top_k: int | None = None) -> ShownReport:
    experiment_dir = Path(experiment_dir)
    if not experiment_dir.is_dir():
        raise UserError(f"{experiment_dir}: no such experiment folder")
    experiment = Experiment.load(experiment_dir)
    job, trials = experiment.job, experiment.trials()
    if not any(len(t.history) for t in trials):
        raise UserError(f"{experiment_dir}: no trial has reported yet")
    board, notes = leaderboard(experiment), []
    if evaluate_top_k:
        board, notes = evaluate_top(board, job, evaluate_top_k, experiment_dir)
    notes += damage_notes(trials)
    params = list(job.search_space)
    log_params = {k for k, d in job.search_space.items() if d.kind == "loguniform"}
    columns = [c for c in board.columns if c not in ("checkpoint", "error", "damaged")]

    write_text_atomically(experiment_dir / LEADERBOARD_CSV, board.to_csv(index=False))
    write_text_atomically(experiment_dir / LEADERBOARD_MD, f"# {experiment_dir.name}\n\n" + markdown(board, columns))
    importance = draw(experiment, board, params, log_params)

    best = board.iloc[0]
    report = Report(
        experiment_dir=known_as(experiment_dir.resolve()),
        job=job.name,
        metric=job.metric,
        mode=job.mode,
        best=BestTrial(
            trial_id=best["trial_id"],
            params={p: _plain(best[p]) for p in params},
            value=_plain(best[f"best_{job.metric}"]),
            evaluation=_plain(best["best_evaluation"]),
            checkpoint=best["checkpoint"],
            interval=_interval(best),
            tied_with_best=[r["trial_id"] for _, r in board.iterrows() if r.get("tied_with_best") in (True,)],
            test_accuracy=_plain(best["test_accuracy"]) if "test_accuracy" in board else None,
        ),
        trials=[{k: _plain(v) for k, v in row.items()} for _, row in board.iterrows()],
        importance=importance.as_json(),
        files=[LEADERBOARD_CSV, LEADERBOARD_MD, REPORT_FILE, *PLOTS],
        notes=notes,
    )
    write_json_atomically(experiment_dir / REPORT_FILE, report.as_json())
    shown = board.assign(damaged=board["damaged"].map(lambda v: "yes, see below" if isinstance(v, str) else None))
    return ShownReport(
        report, markdown(shown.head(15), _table_columns(board, params, job.metric)), importance.describe()
    )


def draw(experiment: Experiment, board: pd.DataFrame, params: list[str], log_params: set[str]) -> Importance:
    """The five plots, each trial in one colour throughout; returns the importance they show."""
    job, folder = experiment.job, experiment.folder
    # the order the trials started in: Ray numbers its trials as it creates them, round by round
    order = [t.trial_id for t in sorted(experiment.trials(), key=lambda t: (t.round, t.trial_id))]
    look = Look.of(
        order, job.metric, job.mode, board.iloc[0]["trial_id"] if board[f"best_{job.metric}"].notna().any() else None
    )
    by_id = {t.trial_id: t for t in experiment.trials()}
    reported = board[board[f"best_{job.metric}"].notna()]
    rows = [
        {"params": by_id[t].params, "value": float(v), "stopped_early": by_id[t].stopped_early}
        for t, v in zip(reported["trial_id"], reported[f"best_{job.metric}"], strict=True)
    ]
    importance = fanova(job.search_space, rows, job.metric, job.mode)
    trial_plots.learning_curves([by_id[t] for t in board["trial_id"]], look, folder / PLOTS[0])
    trial_plots.optimization_history(board, order, look, folder / PLOTS[1])
    trial_plots.params_vs_metric(reported, params, log_params, look, folder / PLOTS[2])
    trial_plots.parallel_coordinates(reported, params, log_params, look, folder / PLOTS[3])
    trial_plots.param_importance(importance, look, folder / PLOTS[4])
    return importance


def _interval(row) -> list[float] | None:
    low, high = _plain(row.get("metric_low")), _plain(row.get("metric_high"))
    return None if low is None else [low, high]


def _table_columns(board: pd.DataFrame, params: list[str], metric: str) -> list[str]:
    wanted = [
        "rank",
        "trial_id",
        "group",
        "status",
        "stopped_by",
        "evaluations",
        f"best_{metric}",
        "metric_low",
        "metric_high",
    ]
    wanted += ["vs_best", "tied_with_best", "best_evaluation", "memory_mb", "test_accuracy"]
    marked = ["damaged"] if board["damaged"].notna().any() else []  # named in full in the notes below it
    return [c for c in wanted if c in board and board[c].notna().any()] + params + marked


def _plain(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value
