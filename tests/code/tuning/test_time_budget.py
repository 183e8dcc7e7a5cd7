"""The time budget's record of the trials it cut, and how an experiment reads it back: a trial the
clock cut is not one the scheduler stopped early (a real cut by Ray: test_tune.py)."""

from __future__ import annotations

import json
import pickle
import shutil
import time
from types import SimpleNamespace

from caviar.experiment.job_record import load_job_of
from caviar.experiment.layout import BUDGET_FILE
from caviar.experiment.outcome import finish
from caviar.experiment.record import Experiment, load_trials
from caviar.tuning.ray_compat import time_budget as budget_module
from caviar.tuning.ray_compat.time_budget import TimeBudget, record_cut


def trials(folder, **statuses):
    """Stand-ins for Ray's Trial: the three attributes the budget reads."""
    return [
        SimpleNamespace(trial_id=tid, status=status, remote_experiment_path=str(folder))
        for tid, status in statuses.items()
    ]


def test_the_budget_names_the_trials_still_live_when_it_fires_and_writes_once(tmp_path):
    budget = TimeBudget(0.05, local=True)
    live = trials(tmp_path, a="TERMINATED", b="RUNNING", c="PENDING", d="ERROR", e="PAUSED")
    budget.on_step_begin(0, live)
    assert not budget.stop_all()  # the clock starts at the first check, as Ray's does
    assert not (tmp_path / BUDGET_FILE).exists()
    time.sleep(0.1)
    assert budget.stop_all()
    record = json.loads((tmp_path / BUDGET_FILE).read_text())
    assert record["cut"] == ["b", "c", "e"] and record["time_budget_s"] == 0.05
    live[1].status = "TERMINATED"  # Ray stops them; later checks must not rewrite the record
    assert budget.stop_all()
    assert json.loads((tmp_path / BUDGET_FILE).read_text())["cut"] == ["b", "c", "e"]


def test_a_copy_of_the_stopper_sees_the_trials_its_callback_saw(tmp_path):
    """A resumed run: Ray restores the stopper from the saved state, apart from the callback."""
    callback = TimeBudget(0.01, local=True)
    stopper = pickle.loads(pickle.dumps(callback))
    assert stopper is not callback and stopper.local and stopper._timeout_seconds == 0.01
    callback.on_step_begin(0, trials(tmp_path, a="RUNNING", b="TERMINATED"))
    assert fire(stopper)
    assert json.loads((tmp_path / BUDGET_FILE).read_text())["cut"] == ["a"]
    callback.on_experiment_end([])
    assert callback.token not in budget_module._LIVE_TRIALS


def fire(budget: TimeBudget) -> bool:
    budget.stop_all()
    time.sleep(0.05)
    return budget.stop_all()


def test_remote_storage_records_nothing(tmp_path):
    budget = TimeBudget(0.01, local=False)
    budget.on_step_begin(0, trials(tmp_path, a="RUNNING"))
    assert fire(budget)
    assert not list(tmp_path.iterdir())


def test_a_record_that_cannot_be_written_never_stops_the_run(tmp_path, caplog):
    (tmp_path / "a-file").write_text("")
    budget = TimeBudget(0.01, local=True)
    budget.on_step_begin(0, trials(tmp_path / "a-file" / "experiment", a="RUNNING"))
    assert fire(budget)  # the clock still stops the search
    assert "could not record the trials the time budget cut" in caplog.text


def test_a_resumed_run_adds_to_the_record(tmp_path):
    record_cut(tmp_path, 30, ["b"])
    record_cut(tmp_path, 30, ["c", "b"])
    assert json.loads((tmp_path / BUDGET_FILE).read_text())["cut"] == ["b", "c"]


def test_a_cut_trial_counts_as_cut_not_as_stopped_early(experiment, tmp_path):
    copy = tmp_path / "experiment"
    shutil.copytree(experiment, copy)
    before = {t.trial_id: t for t in load_trials(copy)}
    stopped = sorted(tid for tid, t in before.items() if t.stopped_early)
    assert stopped, "the shared experiment's ASHA run stops at least one trial"
    record_cut(copy, 30, [stopped[0]])

    after = {t.trial_id: t for t in load_trials(copy)}
    assert after[stopped[0]].cut_by_budget and not after[stopped[0]].stopped_early
    assert all(not t.cut_by_budget for tid, t in after.items() if tid != stopped[0])
    finished = finish(Experiment.load(copy, load_job_of(copy)), wall_s=1.0)
    outcome = finished.as_json()
    assert outcome["cut_by_budget"] == 1 and outcome["stopped_early"] == len(stopped) - 1
    assert next(t for t in outcome["trials"] if t["trial_id"] == stopped[0])["cut_by_budget"] is True
    printed = "\n".join(finished.describe())
    assert f"{len(stopped) - 1} stopped early, 1 cut by the time budget," in printed
