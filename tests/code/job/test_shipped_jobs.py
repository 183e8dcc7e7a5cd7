"""Every job in tune_jobs/ runs in smoke form (`--smoke`: 2 trials, a few steps) on the fixture, in one
local Ray session, and its outcome JSON is checked. The pretrained job runs against a hub stand-in:
a tiny BERT and WordPiece tokenizer saved with save_pretrained, the path klue/bert-base users take."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from caviar.job.loading import load_job
from tests.conftest import FIXTURE_NSMC

pytestmark = pytest.mark.slow
JOBS = sorted(Path(__file__).parents[3].glob("tune_jobs/*.yaml"))


@pytest.fixture(scope="module")
def ray_session():
    import ray

    from caviar.tuning.search.ray_session import start_ray

    start_ray(None)
    yield
    ray.shutdown()


def test_every_shipped_job_is_here():
    names = {job.stem for job in JOBS}
    shipped = {
        "quickstart",
        "nsmc_asha",
        "nsmc_best",
        "nsmc_pbt",
        "nsmc_panda",
        "klue_bert_asha",
        "nsmc_pretrained",
        "nsmc_electra",
    }
    assert shipped <= names


@pytest.mark.parametrize("job_file", JOBS, ids=[job.stem for job in JOBS])
def test_shipped_job_runs_in_smoke_form(ray_session, hub_standin, tmp_path, job_file):
    from caviar.tuning.pipeline import tune_job

    overrides = [f"data.dir={FIXTURE_NSMC}", f"storage={tmp_path}"]
    job = load_job(job_file, overrides, smoke=True)
    if job.model.pretrained:
        job = load_job(job_file, [*overrides, f"model.pretrained={hub_standin}"], smoke=True)
    outcome = tune_job(job, experiment="smoke").as_json()
    assert len(outcome["trials"]) == 2 and outcome["errored"] == 0, outcome["trials"]
    # the best is the best trial's best evaluation, and its kept checkpoint is that evaluation's
    assert outcome["best_val_accuracy"] == max(t["val_accuracy_at_best"] for t in outcome["trials"] if t["checkpoint"])
    kept = json.loads(Path(outcome["best_checkpoint"], "caviar.json").read_text(encoding="utf-8"))
    assert kept["metrics"][job.metric] == outcome[f"best_{job.metric}"]
    assert Path(outcome["best_checkpoint"], "model.safetensors").is_file()
    assert json.loads((tmp_path / "smoke" / "caviar_tune.json").read_text(encoding="utf-8")) == outcome
    saved = json.loads((tmp_path / "smoke" / "caviar_job.json").read_text(encoding="utf-8"))
    assert saved["data"]["dir"] == str(FIXTURE_NSMC.resolve()) and saved["data"]["fingerprint"]  # resolved once
    if job.stages.pretrain:  # stage 0 ran, and the trials fine-tuned what it made
        stage0 = json.loads((tmp_path / "smoke" / "caviar_pretrain.json").read_text(encoding="utf-8"))
        assert saved["model"]["pretrained"] == outcome["pretrained"] == stage0["folder"]
        assert not saved["stages"]["pretrain"]
        assert Path(stage0["folder"], "pretrain.json").is_file()


def test_a_tune_searching_the_objective_fine_tunes_each_trial_from_its_own_stage0(ray_session, tmp_path):
    """Issue 33, item 2, end to end through Ray: one stage-0 folder per objective, each trial fine-tunes
    the folder of the objective it drew, and the leaderboard shows which objective that was."""
    from caviar.experiment.record import Experiment
    from caviar.experiment.report import leaderboard
    from caviar.tuning.pipeline import tune_job
    from tests.conftest import TINY, tiny_job_yaml

    job_file = tiny_job_yaml(
        tmp_path / "job.yaml",
        model={**TINY["model"], "pretrained": {"from_pretrain": True}},
        pretrain={"epochs": 1, "batch_size": 16, "log_every": 4},
        train={**TINY["train"], "epochs": 1},
        search_space={"pretrain.objective": {"grid": ["mlm", "electra"]}},
        num_samples=1,
        storage=str(tmp_path),
    )
    from ray.tune.utils import log

    verbosity = log.verbosity
    outcome = tune_job(load_job(job_file), experiment="objectives").as_json()
    assert log.verbosity == verbosity, "an in-process tune must leave the caller's Ray Tune verbosity as it was"
    assert len(outcome["trials"]) == 2 and outcome["errored"] == 0, outcome["trials"]
    experiment = Experiment.load(tmp_path / "objectives")
    folders = experiment.job.stages.pretrained_by
    board = leaderboard(experiment)
    assert sorted(board["pretrain.objective"]) == ["electra", "mlm"]
    for _, row in board.iterrows():
        card = json.loads(Path(row["checkpoint"], "caviar.json").read_text(encoding="utf-8"))
        folder = card["config"]["model"]["pretrained"]
        assert folder in folders.values()
        made_by = json.loads(Path(folder, "pretrain.json").read_text(encoding="utf-8"))["objective"]
        assert made_by == row["pretrain.objective"]
