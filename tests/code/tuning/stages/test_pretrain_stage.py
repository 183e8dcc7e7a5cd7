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
from caviar.job.schema import JobSpec
from caviar.registry import store as registry
from caviar.serving.app import create_app
from caviar.tuning.stages.pretrain_stage import PretrainCard, pretrain_stage
from model.config import DataConfig
from model.data import load_splits
from model.mlm import texts_sha256
from tests.conftest import FIXTURE_NSMC, TINY, tiny_job_yaml

PRETRAIN = {"epochs": 2, "batch_size": 16, "lr": 3e-3, "log_every": 4}
FROM_PRETRAIN = {**TINY["model"], "pretrained": {"from_pretrain": True}}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("objective", ["mlm", "electra"])
def test_pretrain_writes_a_folder_that_fine_tuning_loads(cli, tmp_path, objective):
    """Either objective's folder loads through model.pretrained and fine-tunes (issue 33: ELECTRA's
    holds the discriminator, a BertModel), and its card records what it learnt."""
    job = tiny_job_yaml(tmp_path / "job.yaml", pretrain={**PRETRAIN, "objective": objective})
    out = tmp_path / "pretrained"

    proc = cli("pretrain", job, "--out", out, "--json")

    assert proc.returncode == 0, proc.stderr
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    extra = {"disc_loss"} if objective == "electra" else set()
    assert set(last) == {"folder", "objective", "mlm_loss", "steps", "wall_s", *extra} and Path(last["folder"]) == out
    card = json.loads((out / CARD).read_text(encoding="utf-8"))
    assert card["objective"] == last["objective"] == objective
    if objective == "electra":
        assert card["disc_loss"] > 0 and 0 < card["replaced_accuracy"] <= 1
        assert {"mlm_loss", "disc_loss", "replaced_accuracy", "original_share", "lr"} <= set(card["curve"][-1])
        assert 0 < card["original_share"] < 1
        assert "replaced-token accuracy" in proc.stderr and "(all-'original': " in proc.stderr
        assert json.loads((out / "config.json").read_text())["architectures"] == ["BertModel"]
    assert last["steps"] == card["steps"] == 2 * 192 // 16 and len(card["curve"]) == card["steps"] // 4
    for name in ("config.json", "model.safetensors", "tokenizer.json", "mlm_loss.png"):
        assert (out / name).is_file(), name
    assert any((out / "tensorboard").glob("events.out.tfevents.*"))
    # what it read: the train split, and nothing of validation, the gate or test
    splits = load_splits(DataConfig(dir=str(FIXTURE_NSMC), val_fraction=0.2))
    assert card["texts"] == len(splits.train) and card["texts_sha256"] == texts_sha256(splits.train.document)
    assert card["not_read"] == {"validation": len(splits.val), "gate": len(splits.gate), "test": len(splits.test)}
    assert len(splits.gate) > 0  # the default gate is held out here too
    held_out = [t for t in (*splits.val.document, *splits.gate.document, *splits.test.document) if " " in t.strip()]
    stored = b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file())
    assert held_out and not any(t.encode() in stored for t in held_out)

    tuned = tmp_path / "tuned"
    extra = ("--set", f"model.pretrained={out}", "--set", "model.head=mlp", "--set", "model.freeze_base=true")
    proc = cli("train", job, *extra, "--set", "train.epochs=1", "--out", tuned)
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((tuned / "checkpoint" / "caviar.json").read_text(encoding="utf-8"))
    assert meta["pretrained"] == {"source": str(out.resolve()), "fingerprint": sha256(out / "model.safetensors")}


@pytest.mark.parametrize(
    ("objective", "accuracy", "share", "warned"),
    [("electra", 0.8956, 0.8950, True), ("electra", 0.9040, 0.8950, True), ("electra", 0.9100, 0.8950, False),
     ("electra", 0.9700, 0.8950, False),
     ("electra", 0.9700, None, False), ("mlm", None, None, False)],
)  # fmt: skip
def test_a_discriminator_no_better_than_all_original_is_called_out(tmp_path, objective, accuracy, share, warned):
    """Full NSMC's failed ELECTRA run: 89.56% replaced-token accuracy, about the share of original
    tokens; it fine-tuned to 50%. Its card says so, one line in what `caviar pretrain` prints."""
    card = PretrainCard(
        key="k", job="j", data_fingerprint="f", texts=1, texts_sha256="s", not_read={}, steps=1, mlm_loss=5.2,
        examples_per_s=1.0, wall_s=1.0, settings={}, model={}, vocab=300, objective=objective,
        disc_loss=0.33 if objective == "electra" else None, replaced_accuracy=accuracy, original_share=share,
    )  # fmt: skip
    lines = card.describe(tmp_path)
    warnings = [line for line in lines if line.startswith("warning:")]
    assert (card.unlearned() is not None) == warned == bool(warnings)
    if warned:
        assert "no better than answering 'original' everywhere (89.5%)" in warnings[0]
        assert len(lines) == 3 and "\n" not in warnings[0]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("pretrain.lrr=1e-3", "pretrain.lrr"),
        ("pretrain.mask_probability=1.5", "pretrain.mask_probability"),
        ("pretrain.epochs=0", "pretrain.epochs"),
        ("pretrain.batch_size=x", "pretrain.batch_size"),
        ("pretrain.precision=fp16", "pretrain.precision"),
        ("model.pretrained={from_pretrain: false}", "model.pretrained"),
        ("pretrain.objective=bert", "pretrain.objective"),
        ("pretrain.generator_scale=0", "pretrain.generator_scale"),
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
    assert job.stages.pretrain and job.model.pretrained is None

    splits = load_splits(job.data)
    first, made = pretrain_stage(job, splits, progress=False)
    weights = Path(made.folder) / "model.safetensors"
    written = weights.stat().st_mtime_ns
    second, found = pretrain_stage(load_job(job_file), splits, progress=False)

    assert not made.reused and found.reused and found.folder == made.folder
    assert weights.stat().st_mtime_ns == written  # not pretrained again
    assert first.model.pretrained == second.model.pretrained == made.folder
    assert not second.stages.pretrain
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


def test_the_cache_key_tells_the_objectives_apart_and_keeps_mlm_keys_as_they_were(tmp_path):
    """Issue 33: the key covers the objective and ELECTRA's settings; an MLM job's key ignores
    ELECTRA's settings, so folders pretrained before ELECTRA are still found."""
    from caviar.tuning.stages.pretrain_stage import pretrain_key

    job_file = tiny_job_yaml(tmp_path / "job.yaml", model=FROM_PRETRAIN, pretrain=PRETRAIN, storage=str(tmp_path))
    splits = load_splits(load_job(job_file).data)

    def key(*overrides: str) -> str:
        return pretrain_key(load_job(job_file, list(overrides)), splits)

    mlm, electra = key(), key("pretrain.objective=electra")
    assert mlm != electra
    assert key("pretrain.generator_scale=0.5") == key("pretrain.disc_weight=10") == mlm
    assert key("pretrain.sample_temperature=2") == mlm
    assert key("pretrain.objective=electra", "pretrain.sample_temperature=2") != electra
    assert key("pretrain.objective=electra", "pretrain.generator_scale=0.5") != electra
    assert key("pretrain.objective=electra", "pretrain.disc_weight=10") != electra
    # this job's key as computed before ELECTRA (commit 7ed42e1), from the train rows it read then
    # (split version 1: an experiment recorded before split versions reads them still)
    before = load_splits(load_job(job_file).data.model_copy(update={"split": 1}))
    assert pretrain_key(load_job(job_file), before) == "c6b7dd361a92fccc8e6c"


def test_a_job_searching_the_objective_pretrains_once_per_value(tmp_path):
    """Issue 33, item 2: stage 0 makes one folder per searched setting, found again on a second run;
    each trial's drawn objective picks its own folder, and a reseed of it keeps that folder."""
    from caviar.tuning.search.search_space import trial_config
    from caviar.tuning.stages.reseed import seed_job

    space = {"pretrain.objective": {"grid": ["mlm", "electra"]}, "train.lr": {"choice": [1e-3, 3e-3]}}
    job_file = tiny_job_yaml(
        tmp_path / "job.yaml", model=FROM_PRETRAIN, pretrain=PRETRAIN, storage=str(tmp_path), search_space=space
    )
    splits = load_splits(load_job(job_file).data)
    resolved, made = pretrain_stage(load_job(job_file), splits, progress=False)
    by_setting = resolved.stages.pretrained_by
    assert len(by_setting) == 2 and len(set(by_setting.values())) == 2 and not made.reused
    objectives = {json.loads((Path(f) / CARD).read_text())["objective"]: f for f in by_setting.values()}
    assert set(objectives) == {"mlm", "electra"}
    assert [made.setting, made.others[0]["setting"]] == [
        {"pretrain.objective": "mlm"},
        {"pretrain.objective": "electra"},
    ]
    again, found = pretrain_stage(load_job(job_file), splits, progress=False)
    assert found.reused and all(o["reused"] for o in found.others) and again.stages.pretrained_by == by_setting

    base = resolved.trial_base()
    for objective, folder in objectives.items():
        cfg = trial_config(base, {"pretrain": {"objective": objective}, "train": {"lr": 3e-3}})
        assert cfg.model.pretrained == folder and cfg.train.lr == 3e-3
        seeded = seed_job(resolved, {"pretrain.objective": objective, "train.lr": 3e-3}, [1, 2], rank=1)
        assert seeded.model.pretrained == folder
    saved = JobSpec.model_validate(resolved.model_dump(mode="json"))  # caviar_job.json reads back (resume)
    assert saved.stages.pretrained_by == by_setting


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"pretrain.objective": {"choice": ["mlm", "bert"]}}, "search_space.pretrain.objective: value 'bert'"),
        ({"pretrain.lr": {"loguniform": [1e-4, 1e-3]}}, "search_space.pretrain.lr: give choice or grid values"),
        ({"pretrain.log_every": {"choice": [1, 2]}}, "search_space.pretrain.log_every: not a pretraining setting"),
    ],
)
def test_a_searched_pretraining_setting_that_cannot_be_is_one_line(tmp_path, space, message):
    job = tiny_job_yaml(tmp_path / "job.yaml", model=FROM_PRETRAIN, search_space=space)
    with pytest.raises(Exception, match=message.replace("(", r"\(").replace(".", r"\.")):
        load_job(job)
    plain = tiny_job_yaml(tmp_path / "plain.yaml", search_space={"pretrain.objective": {"choice": ["mlm"]}})
    with pytest.raises(Exception, match="pretraining is searched only with model.pretrained"):
        load_job(plain)
