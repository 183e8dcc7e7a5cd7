"""Fused trials end to end (issue 32): a `fuse: 2` search on real Ray; one leaderboard row per
member with its group, ASHA stopping members on one rung table, and a member's checkpoint promoted
and served like any trial's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from caviar.experiment.record import Experiment, load_trials
from caviar.job.loading import load_job
from caviar.registry.promote import promote
from caviar.registry.store import read_card
from caviar.serving.app import create_app
from caviar.tuning.members.fusion import fused_groups, sample_members
from tests.code.tuning.tune_runs import (
    TUNE,
    rows,
    run_caviar,
    summary_of,
    tune_killed_when,
)
from tests.conftest import TINY, tiny_job_yaml

pytestmark = pytest.mark.slow
SPACE = {  # every member differs in fusible values only: its optimizer values, dropout and init
    "train.lr": {"loguniform": [2e-3, 1e-2]},
    "train.weight_decay": {"uniform": [0.0, 0.1]},
    "model.dropout": {"choice": [0.0, 0.1]},
    "train.init_seed": {"choice": [1, 2, 3]},
}


EVALUATIONS = 4


@pytest.fixture(scope="module")
def fused_run(tmp_path_factory, ray_head) -> tuple[dict, Path, Path]:
    """One group at a time, so the members reach the rung table in a fixed order (the resume test
    compares against it)."""
    tmp = tmp_path_factory.mktemp("fused")
    spec = {**TUNE, "search_space": SPACE, "num_samples": 6, "fuse": 3, "max_concurrent_trials": 1}
    spec["scheduler"] = {"type": "asha", "max_t": EVALUATIONS, "grace_period": 1, "reduction_factor": 2}
    train = {**TINY["train"], "epochs": EVALUATIONS, "eval_every": 1.0}
    job = tiny_job_yaml(tmp / "job.yaml", storage=str(tmp / "results"), train=train, **spec)
    summary = summary_of(run_caviar("tune", job, "--name", "fused", "--json", env=ray_head))
    return summary, tmp / "results" / "fused", job


def test_a_fused_search_has_one_row_per_member(fused_run):
    summary, experiment, job = fused_run
    assert len(summary["trials"]) == 6 and {t["group"] for t in summary["trials"]} == {
        t.trial_id for t in load_trials(experiment, members=False)
    }
    assert len({t["group"] for t in summary["trials"]}) == 2  # 6 members, 3 to a group
    # the members are the configurations a fuse: 1 search would have tried, in its order
    sampled = sample_members(load_job(job))
    by_member = {t.trial_id: t.params for t in load_trials(experiment)}
    assert sorted(json.dumps(p, sort_keys=True) for p in by_member.values()) == sorted(
        json.dumps(p, sort_keys=True) for p in sampled
    )
    assert [len(g) for g in fused_groups(load_job(job))] == [3, 3]
    # ASHA stopped members on one table: some early, at least one to the end
    evaluations = sorted(t["evaluations"] for t in summary["trials"])
    assert summary["stopped_early"] >= 1 and evaluations[-1] == EVALUATIONS, evaluations
    leaderboard = (experiment / "leaderboard.csv").read_text() if (experiment / "leaderboard.csv").exists() else ""
    assert all(row["cpu_s"] > 0 for row in summary["trials"])  # each member's share of its group's seconds
    assert all(0 < row["memory_mb"] < 24 * 1024 for row in summary["trials"])  # its share of the group's peak
    kept = [row for row in summary["trials"] if row["checkpoint"]]  # pruning keeps the best 2 members'
    assert len(kept) == 2 and all(Path(row["checkpoint"], "model.safetensors").is_file() for row in kept)
    assert summary["best_trial"] in {row["trial_id"] for row in kept}
    assert not leaderboard or all(row["trial_id"] in leaderboard for row in summary["trials"])
    assert not list(experiment.glob("*/checkpoint_*")), "the groups' own checkpoints go once all members end"
    # each member has its own TensorBoard run
    assert all(list(Path(t.path).glob("events.out.tfevents.*")) for t in load_trials(experiment))


def test_a_members_checkpoint_is_promoted_and_served(fused_run, tmp_path):
    summary, experiment, _ = fused_run
    done = promote(experiment, "fused", root=tmp_path)
    card = read_card(Path(done.path))
    assert card["trial_id"] == summary["best_trial"] and "_m" in card["trial_id"]
    best = Experiment.load(experiment).best()[0]
    assert best.group is not None
    with TestClient(create_app(tmp_path / "fused" / "current")) as client:
        answer = client.post("/predict", json={"text": "정말 재미있어요"})
        assert answer.status_code == 200 and answer.headers["Caviar-Model"] == "fused/v1"


def test_a_killed_fused_search_resumes_and_stops_what_it_would_have(fused_run, tmp_path, ray_head):
    """Killed with SIGKILL once the second group has evaluated once; resumed, every member ends
    after as many evaluations as in the uninterrupted run, its rows recorded once each."""
    whole, _, job = fused_run
    experiment = tmp_path / "results" / "killed"
    job_here = tmp_path / "job.yaml"
    job_here.write_text(Path(job).read_text().replace(str(Path(job).parent / "results"), str(tmp_path / "results")))
    second = "*_00001_*/members/*/result.json"
    tune_killed_when(job_here, lambda: any(rows(r) for r in experiment.glob(second)), "the second group")
    statuses = [json.loads(f.read_text())["status"] for f in experiment.glob("*_00001_*/members/*/member.json")]
    assert "RUNNING" in statuses, "the second group finished before the kill: nothing left to resume"
    resumed = summary_of(run_caviar("resume", experiment, "--json", env=ray_head, timeout=240))

    def evaluations(summary: dict) -> dict[str, int]:
        return {t["trial_id"].split("_", 1)[1]: t["evaluations"] for t in summary["trials"]}

    assert evaluations(resumed) == evaluations(whole)
    for trial in load_trials(experiment):
        steps = list(trial.history["step"])
        assert steps == sorted(set(steps)), (trial.trial_id, steps)


def test_reseed_reruns_a_members_configuration_as_plain_trials(fused_run):
    """Issue 32, item 5: a member's values, fixed, searched over seeds only; seeds are data orders,
    which never share a group, so the re-runs are plain trials, each seed a new init too."""
    from caviar.experiment.job_record import load_job_of
    from caviar.tuning.stages.reseed import seed_job

    summary, experiment, _ = fused_run
    job = load_job_of(experiment)
    member = next(t for t in load_trials(experiment) if t.trial_id == summary["best_trial"])
    seeded = seed_job(job, member.params, [1001, 2001], rank=1)
    assert job.fuse == 3 and seeded.fuse == 1 and seeded.train.init_seed is None
    assert seeded.search_space == {"train.seed": seeded.search_space["train.seed"]}
    for key, value in member.params.items():
        if key != "train.init_seed":
            section, leaf = key.split(".")
            assert getattr(getattr(seeded, section), leaf) == pytest.approx(value), key


def test_patience_stops_each_member_where_its_trial_alone_stops(tmp_path, ray_head):
    """Issue 50: `train.patience` holds per member. The same seeded FIFO job with patience 1, run as
    single trials and with `fuse: 4`, gives each configuration the same evaluations. Without dropout:
    a member with dropout draws its own masks (tests/model/test_fused.py), so its losses, and where
    patience stops it, may differ from its trial's."""
    space = {k: v for k, v in SPACE.items() if k != "model.dropout"}
    spec = {**TUNE, "search_space": space, "num_samples": 4, "scheduler": {"type": "fifo"}, "max_concurrent_trials": 1}
    train = {**TINY["train"], "patience": 1, "lr": 3e-3}  # 6 evaluations at most
    model = {**TINY["model"], "dropout": 0.0}
    evaluations = {}
    for fuse in (1, 4):
        job = tiny_job_yaml(
            tmp_path / f"job{fuse}.yaml", storage=str(tmp_path / "results"), train=train, model=model, fuse=fuse, **spec
        )
        summary = summary_of(run_caviar("tune", job, "--name", f"p{fuse}", "--json", env=ray_head))
        evaluations[fuse] = {json.dumps(t["params"], sort_keys=True): t["evaluations"] for t in summary["trials"]}
        assert len(evaluations[fuse]) == 4
    assert evaluations[4] == evaluations[1]
    assert min(evaluations[1].values()) < 6, evaluations[1]  # patience did stop a configuration early
