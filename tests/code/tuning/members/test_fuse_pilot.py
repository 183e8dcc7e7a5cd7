"""`fuse: auto` (issue 32, item 6): the pilot's measurement, its rule, and the K it hands the search."""

from __future__ import annotations

import json

import pytest

from caviar.job.schema import JobSpec
from caviar.tuning import pipeline
from caviar.tuning.members import fuse_pilot
from caviar.tuning.members.fuse_pilot import FusePilot, PilotRun, choose, measure
from model.data import load_splits
from tests.conftest import TINY

SPACE = {"train.lr": {"loguniform": [1e-3, 1e-2]}, "model.dropout": {"choice": [0.0, 0.1]}}


def run(k: int, speed: float, peak: float, share: float = 1000.0) -> PilotRun:
    return PilotRun(k, speed, peak, share, "cpu")


def test_the_fastest_k_that_fits_is_chosen():
    assert choose([run(1, 100, 10), run(2, 180, 20), run(4, 150, 40)]) == 2
    assert choose([run(1, 100, 10), run(2, 180, 20), run(4, 300, 2000)]) == 2  # K = 4 is faster but does not fit
    assert choose([run(1, 100, 2000)]) == 1  # nothing fits: a plain trial, as without fusion


@pytest.fixture(scope="module")
def job() -> JobSpec:
    return JobSpec.model_validate({**TINY, "search_space": SPACE, "num_samples": 4, "fuse": "auto"})


def test_each_k_is_measured_as_the_search_would_train_it(job):
    splits = load_splits(job.data)
    base = job.trial_config().model_dump()
    members = fuse_pilot.candidates(job)
    assert len(members) == 4  # dropout is fusible: one shape, one group
    one, two = (measure(members[:k], base, splits, cpus=1, gpus=0) for k in (1, 2))
    assert (one["k"], two["k"]) == (1, 2) and one["device"] == "cpu"
    for figures in (one, two):
        assert figures["examples_per_s"] > 0 and 0 < figures["peak_mb"] < figures["share_mb"]


def test_fuse_auto_becomes_the_chosen_k_before_the_job_is_saved(job, tmp_path, monkeypatch):
    """The wiring, with the pilot's Ray tasks stood in for: the job the search runs (and caviar_job.json
    records, for resume) carries the K, and the experiment keeps the pilot's figures."""
    pilot = FusePilot([run(1, 100, 10), run(2, 190, 20), run(4, 170, 40)], 2)
    monkeypatch.setattr(fuse_pilot, "run_pilot", lambda job, splits: pilot)
    monkeypatch.setattr(pipeline, "_start", lambda address, job: None)
    resolved = pipeline.Resolved(job, load_splits(job.data))
    chosen, notes = pipeline._fuse_stage(resolved, None, tmp_path, [])
    assert chosen.job.members_per_trial == 2 and chosen.job.fused
    assert chosen.job.fuse == "auto" and chosen.job.stages.fuse_chosen == 2  # as written, and what the pilot chose
    again = JobSpec.model_validate(chosen.job.model_dump(mode="json"))  # caviar_job.json, read on resume
    assert again.members_per_trial == 2
    assert notes == [pilot.describe()] and notes[0].startswith("fuse: auto chose 2 on cpu (K=1 100 ex/s")
    recorded = json.loads((tmp_path / "fuse_pilot.json").read_text())
    assert recorded["chosen"] == 2 and [r["k"] for r in recorded["runs"]] == [1, 2, 4]
    fixed = JobSpec.model_validate({**TINY, "fuse": 3})
    assert pipeline._fuse_stage(pipeline.Resolved(fixed, resolved.splits), None, tmp_path, ["a"])[1] == ["a"]
