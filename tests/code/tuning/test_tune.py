"""Tuner checks on real Ray: ASHA stops trials early, crashed trials retry, killed drivers resume,
TensorBoard holds scalars and hparams, and no Ray process outlives its test.

Each test runs `caviar tune` as a user would, in a subprocess that starts and stops its own Ray.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from caviar.experiment.record import UNFINISHED, load_trials
from tests.conftest import TINY, TRIAL_START_TIMEOUT_S, tiny_job_yaml
from tests.ray_processes import ray_processes

pytestmark = pytest.mark.slow

TUNE = {
    "search_space": {"train.lr": {"loguniform": [3e-4, 1e-2]}, "train.weight_decay": {"uniform": [0.0, 0.1]}},
    "scheduler": {"type": "asha", "max_t": 6, "grace_period": 1, "reduction_factor": 2},
    "num_samples": 6,
    "max_concurrent_trials": 2,
    "resources_per_trial": {"cpu": 1},
    "checkpoint": {"num_to_keep": 1, "keep_best_trials": 2},
    "seed": 3,
}


@pytest.fixture(autouse=True)
def no_ray_left_behind():
    before = ray_processes()
    yield
    deadline = time.time() + 30
    while (left := ray_processes() - before) and time.time() < deadline:
        time.sleep(1)
    for pid in left:  # a test that failed midway must not leak a cluster into the next one
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"Ray processes left behind: {left}"


def caviar_cmd(*args) -> list[str]:
    return [sys.executable, "-c", "from caviar.cli.main import main; main()", *map(str, args)]


def run_caviar(*args, env=None, timeout=300) -> subprocess.CompletedProcess:
    """The command's result; one that runs past `timeout` fails the test with the end of its stderr
    (what a hang printed last is where to look)."""
    try:
        return subprocess.run(caviar_cmd(*args), capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        tail = err.stderr if isinstance(err.stderr, str) else (err.stderr or b"").decode(errors="replace")
        pytest.fail(f"caviar {args[0]} ran past {timeout} s; its stderr ended:\n{tail[-4000:]}")


def summary_of(proc) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def asha_proc(tmp_path_factory) -> subprocess.CompletedProcess:
    tmp = tmp_path_factory.mktemp("asha")
    # lr where every tiny trial learns within the run: ASHA's rungs then rank real differences,
    # not a tie of every trial at chance accuracy (which lets every trial through)
    space = {**TUNE["search_space"], "train.lr": {"loguniform": [2e-3, 1e-2]}}
    # one at a time, so that which trials ASHA stops does not hang on the order two concurrent trials
    # reach a rung (the ties at chance accuracy on the early rungs make that order matter)
    spec = {**TUNE, "search_space": space, "max_concurrent_trials": 1}
    job = tiny_job_yaml(tmp / "job.yaml", storage=str(tmp / "results"), **spec)
    return run_caviar("tune", job, "--name", "asha", "--json")


@pytest.fixture(scope="module")
def asha_run(asha_proc) -> dict:
    return summary_of(asha_proc)


def test_tune_prints_the_next_commands_and_no_ray_noise(asha_proc, asha_run):
    """Issue 9.24 and 9.27: report, promote and a TensorBoard command that runs as printed; no
    'Result logdir' of Ray's scratch folder, no token-auth warning."""
    output = asha_proc.stdout + asha_proc.stderr
    assert "Result logdir" not in output and "Token authentication is enabled" not in output
    lines = asha_proc.stderr.splitlines()
    steps = {ln.split(":", 1)[0].strip(): ln.split(":", 1)[1].split() for ln in lines[lines.index("next:") + 1 :]}
    assert steps["leaderboard"][1:] == ["report", asha_run["experiment_dir"]]
    assert steps["promote best"][1:] == ["promote", asha_run["experiment_dir"]]
    tensorboard = steps["compare trials"]
    assert tensorboard[1:] == ["--logdir", asha_run["experiment_dir"]]
    assert shutil.which(tensorboard[0]), f"{tensorboard[0]} does not run from this shell"
    assert shutil.which(steps["leaderboard"][0])


def test_asha_stops_trials_early_and_completes(asha_run):
    assert len(asha_run["trials"]) == 6
    assert all(t["status"] == "TERMINATED" for t in asha_run["trials"])
    assert asha_run["stopped_early"] >= 1
    assert max(t["evaluations"] for t in asha_run["trials"]) == 6
    assert asha_run["best_val_accuracy"] == max(t["best_val_accuracy"] for t in asha_run["trials"])
    assert Path(asha_run["best_checkpoint"], "model.safetensors").is_file()
    assert {"experiment_dir", "best_trial", "best_config", "trials", "stopped_early", "wall_s"} <= set(asha_run)
    assert asha_run["cut_by_budget"] == 0  # no time budget: ASHA stopped them all


def test_a_time_budget_cuts_the_live_trials_and_says_so(tmp_path):
    """Ray stops live trials when time_budget_s runs out, and they end TERMINATED like trials ASHA
    stopped; caviar records which ones the clock cut, so none of them counts as stopped early."""
    slow = {**TINY["train"], "epochs": 200}  # far longer than the budget
    spec = {**TUNE, "scheduler": {"type": "fifo"}, "num_samples": 2, "time_budget_s": 10}
    job = tiny_job_yaml(tmp_path / "job.yaml", storage=str(tmp_path / "results"), train=slow, **spec)
    proc = run_caviar("tune", job, "--name", "budget", "--json")
    experiment = tmp_path / "results" / "budget"
    record = json.loads((experiment / "caviar_budget.json").read_text())
    trials = load_trials(experiment)
    # both were live (2 at a time), whether or not they had reported yet: the clock cut both
    assert sorted(record["cut"]) == sorted(t.trial_id for t in trials) and len(trials) == 2, proc.stderr[-2000:]
    assert all(t.cut_by_budget and not t.stopped_early and not t.finished_naturally for t in trials)
    if proc.returncode == 0:
        summary = summary_of(proc)
        assert summary["cut_by_budget"] == 2 and summary["stopped_early"] == 0
        assert "0 stopped early, 2 cut by the time budget" in proc.stderr
    else:  # on a loaded machine no trial may have started within 15 s: the outcome then says so
        assert "no trial reported val_accuracy" in proc.stderr, proc.stderr[-2000:]


def test_best_is_judged_at_its_best_evaluation(asha_run):
    trials = load_trials(Path(asha_run["experiment_dir"]))
    best = next(t for t in trials if t.trial_id == asha_run["best_trial"])
    assert asha_run["best_val_accuracy"] == best.history["val_accuracy"].max()
    at_best = best.history[best.history["training_iteration"] == asha_run["best_evaluation"]]
    assert at_best["val_accuracy"].item() == best.history["val_accuracy"].max()  # on a tie, any of the best


def test_checkpoints_pruned_to_the_bound(asha_run):
    trials = load_trials(Path(asha_run["experiment_dir"]))
    with_checkpoints = [t for t in trials if t.checkpoints()]
    assert len(with_checkpoints) == 2  # keep_best_trials
    assert all(len(t.checkpoints()) == 1 for t in with_checkpoints)
    assert 0 < asha_run["checkpoint_bytes"] <= asha_run["checkpoint_bytes_bound"]


def test_tensorboard_has_scalars_and_hparams(asha_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trial_dirs = [p for p in Path(asha_run["experiment_dir"]).iterdir() if p.is_dir() and list(p.glob("events.*"))]
    assert len(trial_dirs) == 6
    for folder in trial_dirs:
        acc = EventAccumulator(str(folder))
        acc.Reload()
        assert {"train_loss", "val_loss", "val_accuracy", "lr"} <= set(acc.Tags()["scalars"])
        plugins = acc.PluginTagToContent("hparams")
        assert "_hparams_/experiment" in plugins and "_hparams_/session_start_info" in plugins
        assert b"train.lr" in plugins["_hparams_/session_start_info"]


def test_a_crashed_trial_is_retried_from_its_checkpoint(tmp_path):
    job = tiny_job_yaml(
        tmp_path / "job.yaml",
        storage=str(tmp_path / "results"),
        **{**TUNE, "num_samples": 2, "scheduler": {"type": "fifo"}, "max_failures": 1},
    )
    env = {**os.environ, "CAVIAR_INJECT_FAULT": f"{tmp_path}:2"}
    summary = summary_of(run_caviar("tune", job, "--name", "retry", "--json", env=env))
    assert (tmp_path / "fault-injected").exists(), "the fault was never injected"
    assert [t["status"] for t in summary["trials"]] == ["TERMINATED", "TERMINATED"]
    assert all(t["evaluations"] == 6 for t in summary["trials"])
    for trial in load_trials(Path(summary["experiment_dir"])):
        steps = list(trial.history["step"])
        assert steps == sorted(set(steps)), "a retry must continue from the checkpoint, not start over"


def test_resume_after_the_driver_is_killed(tmp_path):
    spec = {**TUNE, "scheduler": {"type": "fifo"}, "num_samples": 4}
    slow = {**TINY["train"], "epochs": 7}  # ~14 evaluations a trial: long enough to be killed midway
    job = tiny_job_yaml(tmp_path / "job.yaml", storage=str(tmp_path / "results"), train=slow, **spec)
    experiment = tmp_path / "results" / "killed"
    finished_before = tune_killed_when(job, lambda: wait_for_finished_trial(experiment, timeout=TRIAL_START_TIMEOUT_S))
    trials_before = load_trials(experiment)
    rows_before = {t.trial_id: len(t.history) for t in trials_before}
    # Ray deletes an older checkpoint as soon as a newer one lands but saves its state every few
    # seconds, so a kill can leave a state that names a deleted checkpoint. Stage that race on
    # purpose by hiding the named checkpoint behind a newer index (unless the kill already did it)
    midway = [t for t in trials_before if t.status in UNFINISHED and t.resume_from and t.resume_from.is_dir()]
    assert midway, [(t.trial_id, t.status, t.resume_from, t.evaluations) for t in trials_before]
    # ...and the other race: the checkpoint landed but the driver died before recording its
    # evaluation. Stage it on one trial by cutting result.json back to before that evaluation
    # (a trial that finished just before the kill can still be RUNNING in Ray's saved state; prefer a
    # truly midway one, since cutting a finished trial's last row makes its replay a legitimate extra row)
    lost = next((t for t in midway if t.trial_id not in finished_before), midway[0])
    lost_step = lost.checkpoint_metrics(lost.resume_from)["step"]
    result_file = lost.path / "result.json"
    kept = [x for x in result_file.read_text().splitlines() if x.strip() and json.loads(x)["step"] < lost_step]
    result_file.write_text("".join(line + "\n" for line in kept))
    rows_before[lost.trial_id] = len(kept)
    for trial in midway:
        trial.resume_from.rename(trial.resume_from.with_name("checkpoint_999999"))

    summary = summary_of(run_caviar("resume", experiment, "--json"))
    after = {t.trial_id: t for t in load_trials(experiment)}
    assert set(rows_before) <= set(after), "resume must keep the trials it had, under the same ids"
    assert len(after) == 4  # and the search goes on to num_samples
    statuses = {t.trial_id: (t.status, t.error) for t in after.values()}
    assert all(status == "TERMINATED" for status, _ in statuses.values()), statuses
    for trial_id in finished_before - {lost.trial_id}:
        assert len(after[trial_id].history) == rows_before[trial_id], f"{trial_id} ran again"
    for trial in after.values():  # no evaluation recorded twice, none lost
        steps = list(trial.history["step"])
        assert steps == sorted(set(steps)), (trial.trial_id, steps)
    assert lost_step in set(after[lost.trial_id].history["step"]), "the unrecorded evaluation is reported on resume"
    assert all(after[t.trial_id].finished_naturally for t in midway), "trials whose checkpoint went missing must finish"
    assert len(summary["trials"]) == 4


def test_a_resumed_asha_search_stops_each_trial_at_the_rung_the_uninterrupted_one_did(tmp_path):
    """Issue 31, item 5: one trial at a time, so results arrive in a fixed order; killed with SIGKILL
    while its third trial trains, then resumed. Each trial ends after as many evaluations as in an
    uninterrupted run of the same job, and a trial that started after the kill is stopped on rungs
    the killed driver had filled."""
    space = {**TUNE["search_space"], "train.lr": {"loguniform": [2e-3, 1e-2]}}  # learning lrs: real rungs
    spec = {
        **TUNE,
        "search_space": space,
        "num_samples": 4,
        "max_concurrent_trials": 1,
        "scheduler": {"type": "asha", "max_t": 4, "grace_period": 1, "reduction_factor": 2},
    }
    short = {**TINY["train"], "epochs": 2}  # 4 evaluations
    job = tiny_job_yaml(tmp_path / "job.yaml", storage=str(tmp_path / "results"), train=short, **spec)
    whole = summary_of(run_caviar("tune", job, "--name", "whole", "--json"))
    experiment = tmp_path / "results" / "killed"
    tune_killed_when(job, lambda: any(_rows(r) for r in experiment.glob("*_00002_*/result.json")), "the third trial")
    present = {t.trial_id.rsplit("_", 1)[1] for t in load_trials(experiment)}
    started_after = {f"{i:05d}" for i in range(4)} - present
    resumed = summary_of(run_caviar("resume", experiment, "--json"))

    def rungs(summary: dict) -> dict[str, int | None]:
        """The rung each trial was stopped at (None: not stopped). Evaluation counts can differ by
        one where a kill lost an evaluation that resume did not report again (a separate defect)."""
        return {t["trial_id"].rsplit("_", 1)[1]: t["stopped_at_rung"] for t in summary["trials"]}

    assert rungs(resumed) == rungs(whole)
    stopped_after_kill = [i for i in started_after if rungs(whole)[i] is not None]
    assert whole["stopped_early"] >= 1 and stopped_after_kill, (rungs(whole), started_after)


def _rows(result: Path) -> int:
    return sum(1 for line in result.read_text().splitlines() if line.strip())


def tune_killed_when(job: Path, ready, what: str = "", name: str = "killed", poll_s: float = 0.05):
    """`caviar tune` the job in its own session, then SIGKILL the driver and the local Ray it started
    once `ready()` is true (a value, or True); returns that value. Without `what`, `ready` waits by
    itself and is called once."""
    driver = subprocess.Popen(
        caviar_cmd("tune", job, "--name", name),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        if not what:
            return ready()
        deadline = time.time() + TRIAL_START_TIMEOUT_S
        while not (got := ready()):
            assert time.time() < deadline and driver.poll() is None, f"{what} never reported"
            time.sleep(poll_s)
        return got
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()


def wait_for_finished_trial(experiment: Path, timeout: float) -> set[str]:
    """Poll the trial folders until one trial has finished and another is midway (3+ evaluations,
    so the state Ray saved alongside names a checkpoint to resume it from)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        time.sleep(0.5)
        done, midway = set(), 0
        for result in experiment.glob("*/result.json"):
            lines = [json.loads(x) for x in result.read_text().splitlines() if x.strip()]
            if lines and lines[-1].get("done_training"):
                done.add(lines[-1]["trial_id"])
            elif len(lines) >= 3:
                midway += 1
        if done and midway:
            return done
        if len(done) == 4:
            raise AssertionError("every trial finished before the driver could be killed")
    raise AssertionError(f"no trial finished within {timeout}s")


@pytest.mark.parametrize(
    "spec",
    [
        {
            "scheduler": {
                "type": "pbt",
                # one exploit point mid-run (and one at the end): under PBT every exploit starts
                # a new worker process (no actor reuse, see schedulers.reuse_actors), ~5 s each
                "perturbation_interval": 3,
                "mutations": {"train.lr": {"loguniform": [3e-4, 1e-2]}},
            }
        },
        {"scheduler": {"type": "hyperband", "max_t": 6, "reduction_factor": 2}},
        {"scheduler": {"type": "median_stopping", "grace_period": 1, "min_samples_required": 2}, "search": "optuna"},
    ],
    ids=["pbt", "hyperband", "median_stopping+optuna"],
)
def test_every_scheduler_and_search_completes(tmp_path, spec):
    # PBT with 2 trials: each exploit starts a new worker (~5 s); 2 still exploit each other
    samples = 2 if spec["scheduler"]["type"] == "pbt" else 4
    job = tiny_job_yaml(
        tmp_path / "job.yaml", storage=str(tmp_path / "results"), **{**TUNE, "num_samples": samples, **spec}
    )
    proc = run_caviar("tune", job, "--name", "s", "--json")
    summary = summary_of(proc)
    assert len(summary["trials"]) == samples
    assert "Consider boosting PBT" not in proc.stderr  # advice against the choice schedulers.reuse_actors made
    # synchronous HyperBand leaves the trials it stopped PAUSED; nothing may have errored
    assert {t["status"] for t in summary["trials"]} <= {"TERMINATED", "PAUSED"}
    assert summary["best_val_accuracy"] > 0.5


def test_ctrl_c_stops_cleanly_and_prints_the_resume_command(tmp_path):
    slow = {**TINY["train"], "epochs": 10}
    job = tiny_job_yaml(
        tmp_path / "job.yaml", storage=str(tmp_path / "results"), train=slow, **{**TUNE, "scheduler": {"type": "fifo"}}
    )
    driver = subprocess.Popen(caviar_cmd("tune", job, "--name", "c"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for_reports(tmp_path / "results" / "c", timeout=TRIAL_START_TIMEOUT_S)
    driver.send_signal(signal.SIGINT)
    _, err = driver.communicate(timeout=120)
    assert driver.returncode == 130, err.decode()[-2000:]
    assert f"caviar resume {tmp_path / 'results' / 'c'}" in err.decode()


def wait_for_reports(experiment: Path, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if any(p.stat().st_size for p in experiment.glob("*/result.json")):
            return
        time.sleep(0.3)
    raise AssertionError(f"no trial reported within {timeout}s")


def test_two_rounds_narrow_inside_the_first(tmp_path):
    spec = {
        **TUNE,
        "num_samples": 4,
        "search_space": {
            "train.lr": {"loguniform": [3e-4, 1e-2]},
            "train.weight_decay": {"uniform": [0.0, 0.1]},
            "model.dropout": {"choice": [0.0, 0.1, 0.2]},
        },
        "rounds": 2,
        "refine": {"top_k": 2, "margin": 0.2},
    }
    job = tiny_job_yaml(tmp_path / "job.yaml", storage=str(tmp_path / "results"), **spec)
    summary = summary_of(run_caviar("tune", job, "--name", "r", "--json"))
    assert [r["round"] for r in summary["rounds"]] == [1, 2]
    first, second = (r["space"] for r in summary["rounds"])
    for key in ("train.lr", "train.weight_decay"):
        (_, (lo1, hi1)), (_, (lo2, hi2)) = next(iter(first[key].items())), next(iter(second[key].items()))
        assert lo1 <= lo2 < hi2 <= hi1 and (hi2 - lo2) < (hi1 - lo1), key
    assert set(second["model.dropout"]["choice"]) <= set(first["model.dropout"]["choice"])
    rounds = {t["round"] for t in summary["trials"]}
    assert rounds == {1, 2} and len(summary["trials"]) == 8
    for trial in (t for t in summary["trials"] if t["round"] == 2):
        lo, hi = second["train.lr"]["loguniform"]
        assert lo <= trial["params"]["train.lr"] <= hi
    experiment = Path(summary["experiment_dir"])
    assert (experiment / "round-1").is_dir() and (experiment / "round-2").is_dir()
    assert json.loads((experiment / "caviar_rounds.json").read_text())[1]["space"] == second


def test_lr_from_lr_find_searches_inside_the_suggestion(tmp_path):
    spec = {**TUNE, "num_samples": 2, "search_space": {}, "scheduler": {"type": "fifo"}}
    train = {**TINY["train"], "lr": {"from_lr_find": True}, "schedule": "cyclical"}
    job = tiny_job_yaml(
        tmp_path / "job.yaml",
        storage=str(tmp_path / "results"),
        train=train,
        lr_find={"min_lr": 1e-5, "max_lr": 1.0, "steps": 60, "eval_points": 6, "val_limit": 48},
        **spec,
    )
    summary = summary_of(run_caviar("tune", job, "--name", "lr", "--json"))
    experiment = Path(summary["experiment_dir"])
    found = json.loads((experiment / "lr_find.json").read_text())
    assert (experiment / "lr_find.png").read_bytes().startswith(b"\x89PNG")
    resolved = json.loads((experiment / "caviar_job.json").read_text())
    assert resolved["search_space"]["train.lr"]["loguniform"] == [found["base_lr"], found["max_lr"]]
    assert (resolved["train"]["base_lr"], resolved["train"]["max_lr"]) == (found["base_lr"], found["max_lr"])
    for trial in summary["trials"]:
        assert found["base_lr"] <= trial["params"]["train.lr"] <= found["max_lr"]
