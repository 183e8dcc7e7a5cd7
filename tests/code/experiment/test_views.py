"""The views people expect from a tuner (issue 48.8-48.10): a list of experiments, the plots of
Optuna's dashboard, and why each trial ended."""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import pandas as pd
import pytest

from caviar.experiment import trial_plots
from caviar.experiment.importance import TRUST_FROM, fanova
from caviar.experiment.layout import DRIVER_FILE, OUTCOME_FILE, PLOTS
from caviar.experiment.record import TrialRecord
from caviar.job.distributions import Distribution


def test_experiments_lists_finished_interrupted_and_running(cli, experiment, tmp_path):
    storage = tmp_path / "storage"
    storage.mkdir()
    shutil.copytree(experiment, storage / "a-finished")
    shutil.copytree(experiment, storage / "b-interrupted")
    (storage / "b-interrupted" / OUTCOME_FILE).unlink()
    shutil.copytree(experiment, storage / "c-running")
    (storage / "c-running" / OUTCOME_FILE).unlink()
    driver = {"host": socket.gethostname(), "pid": os.getpid(), "started": 0}
    (storage / "c-running" / DRIVER_FILE).write_text(json.dumps(driver))
    (storage / "not-an-experiment").mkdir()

    proc = cli("experiments", storage, "--json")
    assert proc.returncode == 0, proc.stderr
    listed = {e["name"]: e for e in json.loads(proc.stdout)["experiments"]}
    assert set(listed) == {"a-finished", "b-interrupted", "c-running"}
    outcome = json.loads((experiment / OUTCOME_FILE).read_text())
    finished = listed["a-finished"]
    assert (
        finished["state"] == "finished" and finished["job"] == "tiny" and finished["trials"] == len(outcome["trials"])
    )
    assert finished["best"] == outcome["best_val_accuracy"] and finished["best_interval"] == outcome["best_interval"]
    assert listed["b-interrupted"]["state"] == "interrupted" and listed["c-running"]["state"] == "running"
    assert listed["b-interrupted"]["best"] == pytest.approx(outcome["best_val_accuracy"])  # read from the trials
    assert all(e["size_bytes"] > 0 for e in listed.values())

    table = cli("ls", storage).stdout.splitlines()
    assert table[0] == f"3 experiments in {storage} (newest last):"
    assert table[1].split() == ["name", "job", "state", "trials", "best", "age", "size"]
    row = next(line for line in table if line.startswith("a-finished"))
    assert "finished" in row and "val_accuracy 0." in row and " [0." in row and ("ago" in row or "just now" in row)


def test_experiments_of_a_missing_folder_is_one_line(cli, tmp_path):
    proc = cli("experiments", tmp_path / "nope")
    assert proc.returncode == 2 and proc.stderr.strip() == f"caviar: error: {tmp_path / 'nope'}: no such folder"


def test_report_draws_the_five_plots_and_importance(cli, experiment):
    proc = cli("report", experiment, "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in PLOTS:
        assert (experiment / name).read_bytes().startswith(b"\x89PNG"), name
    assert set(PLOTS) <= set(report["files"])
    importance = report["importance"]
    reported = [t for t in report["trials"] if t["best_val_accuracy"] is not None]
    assert importance["trials"] == len(reported) and importance["method"] == "fANOVA (optuna)"
    if importance["by_param"]:
        assert sum(importance["by_param"].values()) == pytest.approx(1.0)
        assert "a hint, not a ranking" in importance["note"]  # 4 trials: far too few to trust
    assert "parameter importance" in proc.stderr
    assert {t["status"] for t in report["trials"]} <= {"finished", "stopped"}
    assert all(t["stopped_by"] in ("finished", "scheduler") for t in report["trials"])


def test_each_trial_keeps_its_colour_and_the_best_is_bold(monkeypatch, tmp_path):
    """Learning curves, history, parameters and parallel coordinates draw a trial in one colour."""
    figures = []
    monkeypatch.setattr(trial_plots, "save", lambda fig, path: figures.append(fig))
    ids = ["x_00000", "x_00001", "x_00002"]
    history = [
        pd.DataFrame({"training_iteration": [1, 2], "val_accuracy": [0.6 + i / 10, 0.65 + i / 10]}) for i in range(3)
    ]
    trials = [
        TrialRecord(t, "TERMINATED", {"train.lr": 1e-3 * (i + 1)}, tmp_path, h, None)
        for i, (t, h) in enumerate(zip(ids, history, strict=True))
    ]
    board = pd.DataFrame(
        {"trial_id": ids[::-1], "best_val_accuracy": [0.85, 0.75, 0.65], "train.lr": [3e-3, 2e-3, 1e-3]}
    )
    look = trial_plots.Look.of(ids, "val_accuracy", "max", "x_00002")
    trial_plots.learning_curves(trials[::-1], look, tmp_path / "a.png")
    trial_plots.parallel_coordinates(board, ["train.lr"], {"train.lr"}, look, tmp_path / "b.png")
    for fig in figures:
        lines = {ln.get_label().split(" ")[0]: ln for ln in fig.axes[0].get_lines() if ln.get_label().startswith("x_")}
        assert set(lines) == set(ids)
        for trial_id in ids:
            assert (
                lines[trial_id].get_color() == look.colors[trial_id]
                or tuple(lines[trial_id].get_color()) == look.colors[trial_id]
            )
        assert lines["x_00002"].get_linewidth() > lines["x_00000"].get_linewidth()
        legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        assert "x_00002 (best)" in legend and "x_00000" in legend
        assert "(higher is better)" in fig.axes[0].get_title()


def test_parallel_coordinates_axes_show_values_not_low_and_high():
    scaled, ticks = trial_plots._axis(pd.Series([1e-4, 1e-3, 1e-2]), log=True)
    assert list(scaled) == pytest.approx([0, 0.5, 1])
    assert ticks[0] == (0, "1.00e-04") and ticks[2] == (0.5, "0.001") and ticks[-1] == (1, "0.01")
    _, ticks = trial_plots._axis(pd.Series(["linear", "cosine", "linear"]), log=False)
    assert ticks == [(0.0, "cosine"), (1.0, "linear")]


def test_importance_says_what_it_rests_on():
    space = {"train.lr": Distribution(loguniform=(1e-4, 1e-2)), "model.dropout": Distribution(choice=[0.0, 0.1])}
    rows = [
        {
            "params": {"train.lr": 10 ** (-4 + i / 15), "model.dropout": 0.1 * (i % 2)},
            "value": i / 40,
            "stopped_early": i < 10,
        }
        for i in range(TRUST_FROM + 5)
    ]
    found = fanova(space, rows, "val_accuracy", "max")
    assert found.trials == TRUST_FROM + 5 and found.stopped_early == 10 and found.note is None
    assert max(found.by_param, key=found.by_param.get) == "train.lr"  # the value follows the lr alone
    few = fanova(space, rows[:5], "val_accuracy", "max")
    assert few.trials == 5 and "a hint, not a ranking" in few.note
    flat = fanova(space, [{**row, "value": 0.5} for row in rows], "val_accuracy", "max")  # fANOVA raised here
    assert flat.by_param == {} and flat.note == "not computed: every trial has the same val_accuracy"
    outside = fanova(space, [{**rows[0], "params": {"train.lr": 5.0, "model.dropout": 0.1}}], "val_accuracy", "max")
    assert outside.trials == 0 and outside.by_param == {} and "not computed" in outside.note


def _record(status: str, last: dict, **kwargs) -> TrialRecord:
    history = pd.DataFrame([{"training_iteration": 1, "val_accuracy": 0.6, **last}])
    return TrialRecord("t", status, {}, Path("."), history, None, max_t=kwargs.pop("max_t", 4), **kwargs)


@pytest.mark.parametrize(
    ("record", "stopped_by", "state"),
    [
        (_record("TERMINATED", {"done_training": True}), "finished", "finished"),
        (_record("TERMINATED", {"done_training": True, "stopped_by_patience": True}), "patience", "stopped"),
        (_record("TERMINATED", {}), "scheduler", "stopped"),
        (_record("TERMINATED", {}, max_t=1), "finished", "finished"),
        (_record("TERMINATED", {}, cut_by_budget=True), "budget", "stopped"),
        (_record("ERROR", {}), "error", "errored"),
        (_record("PAUSED", {}, max_t=1), "finished", "finished"),  # synchronous HyperBand's end
        (_record("RUNNING", {}), None, "running"),
    ],
)
def test_why_each_trial_ended(record, stopped_by, state):
    assert record.stopped_by == stopped_by and record.state == state
