"""Every job in tune_jobs/ runs in smoke form (`--smoke`: 2 trials, a few steps) on the fixture, in one
local Ray session, and its outcome JSON is checked. The pretrained job runs against a hub stand-in:
a tiny BERT and WordPiece tokenizer saved with save_pretrained, the path klue/bert-base users take."""

from __future__ import annotations

from pathlib import Path

import pytest

from caviar.jobfile import load_job
from tests.conftest import FIXTURE_NSMC

pytestmark = pytest.mark.slow
JOBS = sorted(Path(__file__).parents[2].glob("tune_jobs/*.yaml"))


@pytest.fixture(scope="module")
def ray_session():
    import ray

    from caviar.ray_session import start_ray

    start_ray(None)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def hub_standin(tmp_path_factory) -> Path:
    """A folder shaped like a hub download: config, weights and tokenizer from save_pretrained."""
    from transformers import BertConfig, BertModel

    from model import tokenizer as tk
    from model.config import DataConfig
    from model.data import load_splits

    folder = tmp_path_factory.mktemp("tiny-bert")
    texts = load_splits(DataConfig(dir=str(FIXTURE_NSMC))).train.document.tolist()
    tokenizer = tk.wrap(tk.train_wordpiece(texts, 300))
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_every_shipped_job_is_here():
    names = {job.stem for job in JOBS}
    assert {"quickstart", "nsmc_asha", "nsmc_best", "nsmc_pbt", "nsmc_panda", "klue_bert_asha"} <= names


@pytest.mark.parametrize("job_file", JOBS, ids=[job.stem for job in JOBS])
def test_shipped_job_runs_in_smoke_form(ray_session, hub_standin, tmp_path, job_file):
    from caviar.pipeline import tune_job

    overrides = [f"data.dir={FIXTURE_NSMC}", f"storage={tmp_path}"]
    job = load_job(job_file, overrides, smoke=True)
    if job.model.pretrained:
        job = load_job(job_file, [*overrides, f"model.pretrained={hub_standin}"], smoke=True)
    outcome = tune_job(job, experiment="smoke")
    assert len(outcome["trials"]) == 2 and outcome["errored"] == 0, outcome["trials"]
    assert 0.0 <= outcome["best_val_accuracy"] <= 1.0
    assert Path(outcome["best_checkpoint"], "model.safetensors").is_file()
    assert (tmp_path / "smoke" / "caviar_tune.json").is_file()
