"""`caviar pretrain`, stage 0 of a job, and fine-tuning a saved folder end to end: train, promote, serve.

The hub stand-in (conftest) is a tiny BERT saved with save_pretrained: the exact path a user of
klue/bert-base takes, without the download.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from caviar.experiment.layout import PRETRAIN_CARD as CARD
from caviar.job.loading import load_job
from caviar.registry import store as registry
from caviar.serving.app import create_app
from caviar.tuning.pretrain_stage import pretrain_stage
from model.config import DataConfig
from model.data import load_splits
from model.mlm import texts_sha256
from tests.conftest import FIXTURE_NSMC, TINY, tiny_job_yaml

PRETRAIN = {"epochs": 2, "batch_size": 16, "lr": 3e-3, "log_every": 4}
FROM_PRETRAIN = {**TINY["model"], "pretrained": {"from_pretrain": True}}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_pretrain_writes_a_folder_that_fine_tuning_loads(cli, tmp_path):
    job = tiny_job_yaml(tmp_path / "job.yaml", pretrain=PRETRAIN)
    out = tmp_path / "pretrained"

    proc = cli("pretrain", job, "--out", out, "--json")

    assert proc.returncode == 0, proc.stderr
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(last) == {"folder", "mlm_loss", "steps", "wall_s"} and Path(last["folder"]) == out
    card = json.loads((out / CARD).read_text(encoding="utf-8"))
    assert last["steps"] == card["steps"] == 2 * 192 // 16 and len(card["curve"]) == card["steps"] // 4
    for name in ("config.json", "model.safetensors", "tokenizer.json", "mlm_loss.png"):
        assert (out / name).is_file(), name
    assert any((out / "tensorboard").glob("events.out.tfevents.*"))
    # what it read: the train split, and nothing of validation or test
    splits = load_splits(DataConfig(dir=str(FIXTURE_NSMC), val_fraction=0.2))
    assert card["texts"] == len(splits.train) and card["texts_sha256"] == texts_sha256(splits.train.document)
    assert card["not_read"] == {"validation": len(splits.val), "test": len(splits.test)}
    held_out = [t for t in (*splits.val.document, *splits.test.document) if " " in t.strip()]
    stored = b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file())
    assert held_out and not any(t.encode() in stored for t in held_out)

    tuned = tmp_path / "tuned"
    extra = ("--set", f"model.pretrained={out}", "--set", "model.head=mlp", "--set", "model.freeze_base=true")
    proc = cli("train", job, *extra, "--set", "train.epochs=1", "--out", tuned)
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((tuned / "checkpoint" / "caviar.json").read_text(encoding="utf-8"))
    assert meta["pretrained"] == {"source": str(out.resolve()), "fingerprint": sha256(out / "model.safetensors")}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("pretrain.lrr=1e-3", "pretrain.lrr"),
        ("pretrain.mask_probability=1.5", "pretrain.mask_probability"),
        ("pretrain.epochs=0", "pretrain.epochs"),
        ("pretrain.batch_size=x", "pretrain.batch_size"),
        ("pretrain.precision=fp16", "pretrain.precision"),
        ("model.pretrained={from_pretrain: false}", "model.pretrained"),
    ],
)
def test_bad_pretrain_settings_are_one_line(cli, tmp_path, override, message):
    job = tiny_job_yaml(tmp_path / "job.yaml", pretrain=PRETRAIN)
    proc = cli("pretrain", job, "--set", override, "--out", tmp_path / "out")
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_a_typo_in_the_pretrain_section_gets_a_suggestion(cli, tmp_path):
    job = tiny_job_yaml(tmp_path / "job.yaml", pretrain={"mask_probabilty": 0.2})
    proc = cli("pretrain", job)
    assert proc.returncode == 2 and "did you mean mask_probability?" in proc.stderr, proc.stderr


def test_the_shape_of_a_pretrained_network_is_not_searched(tmp_path):
    job = tiny_job_yaml(tmp_path / "job.yaml", model=FROM_PRETRAIN, search_space={"model.layers": {"choice": [1, 2]}})
    with pytest.raises(Exception, match="search_space.model.layers: the network's shape comes from"):
        load_job(job)


def test_stage_zero_pretrains_once_and_is_found_again(tmp_path):
    job_file = tiny_job_yaml(tmp_path / "job.yaml", model=FROM_PRETRAIN, pretrain=PRETRAIN, storage=str(tmp_path))
    job = load_job(job_file)
    assert job.from_pretrain and job.model.pretrained is None

    splits = load_splits(job.data)
    first, made = pretrain_stage(job, splits, progress=False)
    weights = Path(made.folder) / "model.safetensors"
    written = weights.stat().st_mtime_ns
    second, found = pretrain_stage(load_job(job_file), splits, progress=False)

    assert not made.reused and found.reused and found.folder == made.folder
    assert weights.stat().st_mtime_ns == written  # not pretrained again
    assert first.model.pretrained == second.model.pretrained == made.folder
    assert not second.from_pretrain
    _, in_bf16 = pretrain_stage(load_job(job_file, ["pretrain.precision=bf16"]), splits, progress=False)
    assert in_bf16.reused and in_bf16.folder == made.folder  # how it computes, not what it learns
    other, changed = pretrain_stage(load_job(job_file, ["pretrain.lr=1e-3"]), splits, progress=False)
    assert not changed.reused and changed.folder != made.folder


def test_a_hub_model_fine_tunes_then_promotes_and_serves(cli, hub_standin, registry_dir, tmp_path):
    """Issue 12.4: `caviar train --set model.pretrained=<folder>`, then promote and serve."""
    job = tiny_job_yaml(tmp_path / "job.yaml")
    run = tmp_path / "run"
    proc = cli("train", job, "--set", f"model.pretrained={hub_standin}", "--set", "train.epochs=1", "--out", run)
    assert proc.returncode == 0, proc.stderr

    proc = cli("promote", run, "--name", "hub", "--json")
    assert proc.returncode == 0, proc.stderr
    version_dir = registry_dir / "hub" / "current"
    card = registry.read_card(version_dir)
    assert card["pretrained"]["fingerprint"] == sha256(hub_standin / "model.safetensors")
    assert not Path(card["pretrained"]["source"]).is_absolute()
    assert card["trial_id"] == "train" and card["test"]["examples"] > 0

    with TestClient(create_app(version_dir)) as client:
        got = client.post("/predict", json={"text": "배우들 연기가 너무 좋았다"}).json()
        assert got["label"] in ("긍정", "부정") and 0.0 <= got["positive_probability"] <= 1.0
        assert client.get("/model").json()["pretrained"]["fingerprint"] == card["pretrained"]["fingerprint"]
    proc = cli("predict", "돈 주고 보기 아까웠어요", "--name", "hub")
    assert proc.returncode == 0 and proc.stdout.split()[0] in ("긍정", "부정"), proc.stderr
