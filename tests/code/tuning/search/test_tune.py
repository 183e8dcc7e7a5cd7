"""Tuner checks on real Ray: ASHA stops trials early, a time budget cuts live trials, every
scheduler and search completes, rounds narrow, an LR range test seeds the search, and TensorBoard
holds scalars and hparams. Resuming is in test_resume.py."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from caviar.experiment.record import load_trials
from caviar.ops.local_store import BUCKET, client, keys_under
from tests.code.tuning.tune_runs import TUNE, run_caviar, summary_of
from tests.conftest import TINY, tiny_job_yaml

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def asha_proc(tmp_path_factory, ray_head) -> subprocess.CompletedProcess:
    tmp = tmp_path_factory.mktemp("asha")
    # lr where every tiny trial learns within the run: ASHA's rungs then rank real differences,
    # not a tie of every trial at chance accuracy (which lets every trial through)
    space = {**TUNE["search_space"], "train.lr": {"loguniform": [2e-3, 1e-2]}}
    # one at a time, so that which trials ASHA stops does not hang on the order two concurrent trials
    # reach a rung (the ties at chance accuracy on the early rungs make that order matter)
    spec = {**TUNE, "search_space": space, "max_concurrent_trials": 1}
    job = tiny_job_yaml(tmp / "job.yaml", storage=str(tmp / "results"), **spec)
    return run_caviar("tune", job, "--name", "asha", "--json", env=ray_head)


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


def test_the_live_view_is_a_line_per_change_not_rays_table(asha_proc, asha_run):
    """Issue 48.6: one line per trial started, evaluated and ended, and no table reprinted."""
    live = [line.split("] ", 1)[1] for line in asha_proc.stderr.splitlines() if line.startswith("[")]
    assert "== Status ==" not in asha_proc.stdout + asha_proc.stderr and "+-----" not in asha_proc.stderr
    trials = asha_run["trials"]
    for trial in trials:
        mine = [line for line in live if line.startswith(trial["trial_id"] + " ")]
        assert mine[0].startswith(f"{trial['trial_id']} started: train.lr=")
        assert (
            sum(re.match(rf"{trial['trial_id']} eval \d+/", line) is not None for line in mine) == trial["evaluations"]
        )
        why = "stopped by asha" if trial["stopped_by"] == "scheduler" else "finished"
        assert mine[-1].startswith(f"{trial['trial_id']} {why} at eval {trial['evaluations']}"), mine
    summaries = [line for line in live if " running, " in line]
    assert len(live) == sum(2 + t["evaluations"] for t in trials) + len(summaries)


def test_asha_stops_trials_early_and_completes(asha_run):
    assert len(asha_run["trials"]) == 6
    assert all(t["status"] in ("finished", "stopped") for t in asha_run["trials"])
    assert {t["stopped_by"] for t in asha_run["trials"]} == {"finished", "scheduler"}
    assert sum(t["stopped_by"] == "scheduler" for t in asha_run["trials"]) == asha_run["stopped_early"]
    assert asha_run["stopped_early"] >= 1
    assert max(t["evaluations"] for t in asha_run["trials"]) == 6
    assert asha_run["best_val_accuracy"] == max(t["best_val_accuracy"] for t in asha_run["trials"])
    assert Path(asha_run["best_checkpoint"], "model.safetensors").is_file()
    assert {"experiment_dir", "best_trial", "best_config", "trials", "stopped_early", "wall_s"} <= set(asha_run)
    assert asha_run["cut_by_budget"] == 0  # no time budget: ASHA stopped them all


def test_a_time_budget_cuts_the_live_trials_and_says_so(tmp_path, ray_head):
    """Ray stops live trials when time_budget_s runs out, and they end TERMINATED like trials ASHA
    stopped; caviar records which ones the clock cut, so none of them counts as stopped early."""
    slow = {**TINY["train"], "epochs": 200}  # far longer than the budget
    spec = {**TUNE, "scheduler": {"type": "fifo"}, "num_samples": 2, "time_budget_s": 10}
    job = tiny_job_yaml(tmp_path / "job.yaml", storage=str(tmp_path / "results"), train=slow, **spec)
    proc = run_caviar("tune", job, "--name", "budget", "--json", env=ray_head)
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
def test_every_scheduler_and_search_completes(tmp_path, spec, ray_head):
    # PBT with 2 trials: each exploit starts a new worker (~5 s); 2 still exploit each other
    samples = 2 if spec["scheduler"]["type"] == "pbt" else 4
    job = tiny_job_yaml(
        tmp_path / "job.yaml", storage=str(tmp_path / "results"), **{**TUNE, "num_samples": samples, **spec}
    )
    proc = run_caviar("tune", job, "--name", "s", "--json", env=ray_head)
    summary = summary_of(proc)
    assert len(summary["trials"]) == samples
    assert "Consider boosting PBT" not in proc.stderr  # advice against the choice schedulers.reuse_actors made
    # synchronous HyperBand leaves the trials it stopped PAUSED; nothing may have errored
    assert {t["status"] for t in summary["trials"]} <= {"finished", "stopped"}
    assert summary["best_val_accuracy"] > 0.5


@pytest.mark.parametrize("where", ["disk", "store"])
def test_two_rounds_narrow_inside_the_first(tmp_path, ray_head, where, request):
    """On a local disk, and on object storage (read back through a mirror here)."""
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
    env, storage = ray_head, str(tmp_path / "results")
    if where == "store":  # each trial's files cross the store: half the trials (77 s against 27 s at 4)
        spec |= {"num_samples": 2, "refine": {"top_k": 1, "margin": 0.2}}
        store = request.getfixturevalue("store")
        env, storage = {**ray_head, **store, "CAVIAR_CACHE": str(tmp_path / "cache")}, f"s3://{BUCKET}/rounds"
    job = tiny_job_yaml(tmp_path / "job.yaml", storage=storage, **spec)
    summary = summary_of(run_caviar("tune", job, "--name", "r", "--json", env=env))
    assert [r["round"] for r in summary["rounds"]] == [1, 2]
    first, second = (r["space"] for r in summary["rounds"])
    for key in ("train.lr", "train.weight_decay"):
        (_, (lo1, hi1)), (_, (lo2, hi2)) = next(iter(first[key].items())), next(iter(second[key].items()))
        assert lo1 <= lo2 < hi2 <= hi1 and (hi2 - lo2) < (hi1 - lo1), key
    assert set(second["model.dropout"]["choice"]) <= set(first["model.dropout"]["choice"])
    rounds = {t["round"] for t in summary["trials"]}
    assert rounds == {1, 2} and len(summary["trials"]) == 2 * spec["num_samples"]
    for trial in (t for t in summary["trials"] if t["round"] == 2):
        lo, hi = second["train.lr"]["loguniform"]
        assert lo <= trial["params"]["train.lr"] <= hi
    if where == "store":
        keys = set(keys_under(store, "rounds/r/"))
        assert {"rounds/r/caviar_rounds.json", "rounds/r/caviar_tune.json"} <= keys
        assert {k.split("/")[2] for k in keys if "/experiment_state-" in k} == {"round-1", "round-2"}
        lineage = json.loads(client(store).get_object(Bucket=BUCKET, Key="rounds/r/caviar_rounds.json")["Body"].read())
        assert lineage[1]["space"] == second
        return
    experiment = Path(summary["experiment_dir"])
    assert (experiment / "round-1").is_dir() and (experiment / "round-2").is_dir()
    assert json.loads((experiment / "caviar_rounds.json").read_text())[1]["space"] == second


def test_lr_from_lr_find_searches_inside_the_suggestion(tmp_path, ray_head):
    spec = {**TUNE, "num_samples": 2, "search_space": {}, "scheduler": {"type": "fifo"}}
    train = {**TINY["train"], "lr": {"from_lr_find": True}, "schedule": "cyclical"}
    job = tiny_job_yaml(
        tmp_path / "job.yaml",
        storage=str(tmp_path / "results"),
        train=train,
        lr_find={"min_lr": 1e-5, "max_lr": 1.0, "steps": 60, "eval_points": 6, "val_limit": 48},
        **spec,
    )
    summary = summary_of(run_caviar("tune", job, "--name", "lr", "--json", env=ray_head))
    experiment = Path(summary["experiment_dir"])
    found = json.loads((experiment / "lr_find.json").read_text())
    assert (experiment / "lr_find.png").read_bytes().startswith(b"\x89PNG")
    resolved = json.loads((experiment / "caviar_job.json").read_text())
    assert resolved["search_space"]["train.lr"]["loguniform"] == [found["base_lr"], found["max_lr"]]
    assert (resolved["train"]["base_lr"], resolved["train"]["max_lr"]) == (found["base_lr"], found["max_lr"])
    for trial in summary["trials"]:
        assert found["base_lr"] <= trial["params"]["train.lr"] <= found["max_lr"]
