"""Results checks on a finished tiny experiment: report, promote/registry, and the FastAPI service."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from caviar import registry
from caviar.promote import promote
from caviar.report import write_report
from caviar.serve import create_app
from model.errors import UserError
from model.predict import Predictor
from tests.conftest import tiny_job_yaml

pytestmark = pytest.mark.slow

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TUNE = {
    "search_space": {"train.lr": {"loguniform": [3e-4, 1e-2]}, "model.dropout": {"choice": [0.0, 0.1]}},
    "scheduler": {"type": "asha", "max_t": 6, "grace_period": 1, "reduction_factor": 2},
    "num_samples": 4,
    "max_concurrent_trials": 2,
    "checkpoint": {"num_to_keep": 1, "keep_best_trials": 3},
    "seed": 5,
}


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> Path:
    """A finished tiny experiment, copied to a fresh folder: reading it must not need the driver."""
    tmp = tmp_path_factory.mktemp("exp")
    job = tiny_job_yaml(tmp / "job.yaml", storage=str(tmp / "results"), **TUNE)
    proc = subprocess.run(
        [sys.executable, "-c", "from caviar.cli import main; main()", "tune", job, "--name", "done", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    copied = tmp / "copied"
    shutil.copytree(tmp / "results" / "done", copied)
    shutil.rmtree(tmp / "results")
    return copied


@pytest.fixture
def registry_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("CAVIAR_REGISTRY", str(tmp_path / "registry"))
    return tmp_path / "registry"


def test_report_columns_best_and_plots(experiment):
    summary = write_report(experiment, evaluate_top_k=2)
    board = pd.read_csv(experiment / "leaderboard.csv")
    for column in (
        "rank",
        "trial_id",
        "status",
        "evaluations",
        "stopped_at_rung",
        "best_val_accuracy",
        "best_evaluation",
        "wall_s",
        "cpu_s",
        "gpu_s",
        "checkpoint_bytes",
        "train.lr",
        "model.dropout",
        "test_accuracy",
        "test_f1",
    ):
        assert column in board.columns, column
    assert len(board) == 4
    # the best trial is the maximum over trials of each trial's best-so-far
    best_so_far = {}
    for result in experiment.glob("*/result.json"):
        rows = [json.loads(x) for x in result.read_text().splitlines() if x.strip()]
        best_so_far[rows[0]["trial_id"]] = max(r["val_accuracy"] for r in rows)
    winner = max(best_so_far, key=best_so_far.get)
    assert summary["best"]["val_accuracy"] == best_so_far[winner]
    assert board.loc[0, "best_val_accuracy"] == max(best_so_far.values())
    assert board["test_accuracy"].notna().sum() == 2
    for name in ("learning_curves.png", "params_vs_metric.png", "parallel_coordinates.png"):
        data = (experiment / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, name
    assert (experiment / "leaderboard.md").read_text().startswith("# copied")
    assert json.loads((experiment / "summary.json").read_text())["best"]["trial_id"] == summary["best"]["trial_id"]


def test_report_cli_prints_a_table(cli, experiment):
    proc = cli("report", experiment)
    assert proc.returncode == 0, proc.stderr
    assert "| rank | trial_id |" in proc.stdout
    assert cli("report", experiment.parent / "nope").returncode == 2


def test_promote_twice_then_rollback(experiment, registry_dir):
    first = promote(experiment, "nsmc")
    second = promote(experiment, "nsmc")  # equal test accuracy is not worse
    model_dir = registry_dir / "nsmc"
    assert (first["version"], second["version"]) == ("v1", "v2")
    assert registry.current_version(model_dir) == "v2"
    card = registry.verify(model_dir / "current")
    assert {"trial_id", "hparams", "val", "test", "data_fingerprint", "packages", "created", "files"} <= set(card)
    assert "trainer_state.pt" not in card["files"] and "model.safetensors" in card["files"]
    assert registry.rollback(model_dir) == "v1"
    assert registry.current_version(model_dir) == "v1"
    Predictor.from_checkpoint(model_dir / "current")


def test_a_worse_model_is_refused_unless_forced(cli, experiment, registry_dir):
    promote(experiment, "nsmc")
    card_path = registry_dir / "nsmc" / "v1" / registry.CARD
    card = json.loads(card_path.read_text())
    card["test"]["accuracy"] = 1.01  # make the current version look unbeatable
    card_path.write_text(json.dumps(card))
    proc = cli("promote", experiment, "--name", "nsmc")
    assert proc.returncode == 1
    assert "is below nsmc/v1's 1.0100; not promoted" in proc.stderr
    assert registry.current_version(registry_dir / "nsmc") == "v1"
    proc = cli("promote", experiment, "--name", "nsmc", "--force")
    assert proc.returncode == 0, proc.stderr
    assert registry.current_version(registry_dir / "nsmc") == "v2"


def test_a_crash_mid_promotion_leaves_current_intact(experiment, registry_dir, monkeypatch):
    promote(experiment, "nsmc")
    calls = []

    def copy_then_crash(src, dst, *a, **k):
        calls.append(src)
        if len(calls) == 2:
            raise OSError("disk full (injected)")
        return shutil.copy(src, dst)

    monkeypatch.setattr(registry.shutil, "copy2", copy_then_crash)
    with pytest.raises(OSError, match="injected"):
        promote(experiment, "nsmc")
    model_dir = registry_dir / "nsmc"
    assert registry.current_version(model_dir) == "v1"
    assert registry.versions(model_dir) == ["v1"]
    leftovers = [p for p in model_dir.iterdir() if p.name.startswith(".") and p.name != registry.LOCK]
    assert not leftovers, "temp folders must be cleaned up"
    registry.verify(model_dir / "current")


@pytest.fixture
def served(experiment, registry_dir):
    promote(experiment, "nsmc")
    model = registry_dir / "nsmc" / "current"
    with TestClient(create_app(model)) as client:
        yield client, model


def test_service_matches_model_predict(served):
    client, model = served
    texts = ["이 영화 정말 재미있어요", "시간이 아까운 영화", "배우들 연기가 너무 좋았다"]
    expected = Predictor.from_checkpoint(model).predict(texts)
    for text, want in zip(texts, expected, strict=True):
        got = client.post("/predict", json={"text": text}).json()
        assert got["label"] == want.label and got["label_id"] == want.label_id
        assert got["positive_probability"] == pytest.approx(want.positive_probability, abs=1e-6)
    batch = client.post("/predict/batch", json={"texts": texts}).json()["predictions"]
    assert [p["label"] for p in batch] == [w.label for w in expected]
    assert client.get("/health").json()["status"] == "ok"
    assert client.get("/model").json()["version"] == "v1"
    assert client.get("/docs").status_code == 200


BAD_REQUESTS = [
    ("/predict", {"text": ""}, "text must not be empty or whitespace"),
    ("/predict", {"text": "   \n\t"}, "text must not be empty or whitespace"),
    ("/predict", {"text": "가" * 1001}, "text is 1001 characters; at most 1000"),
    ("/predict", {"text": 42}, "text: must be a string"),
    ("/predict", {"text": None}, "text: must be a string"),
    ("/predict", {}, "text: required"),
    ("/predict", {"text": "좋다", "extra": 1}, "extra: unknown field"),
    ("/predict", ["좋다"], "the body must be a JSON object"),
    ("/predict/batch", {"texts": ["좋다"] * 257}, "at most 256 texts per batch (got 257)"),
    ("/predict/batch", {"texts": []}, "texts must hold at least one text"),
    ("/predict/batch", {"texts": ["좋다", 3]}, "texts.1: must be a string"),
    ("/predict/batch", {"texts": ["좋다", " "]}, "texts[1]: text must not be empty or whitespace"),
    ("/predict/batch", {"texts": "좋다"}, "texts: Input should be a valid list"),
]


@pytest.mark.parametrize(("path", "body", "message"), BAD_REQUESTS)
def test_bad_input_gets_422_with_its_message(served, path, body, message):
    client, _ = served
    response = client.post(path, json=body)
    assert response.status_code == 422
    assert message in response.json()["detail"]


@pytest.mark.parametrize("raw", [b"{not json", b"", b'{"text": "\xff"}'])
def test_invalid_json_gets_422(served, raw):
    client, _ = served
    response = client.post("/predict", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"]


def test_api_key_is_required_when_set(experiment, registry_dir):
    promote(experiment, "nsmc")
    with TestClient(create_app(registry_dir / "nsmc" / "current", api_key="s3cret")) as client:
        assert client.post("/predict", json={"text": "좋다"}).status_code == 401
        bad = client.post("/predict", json={"text": "좋다"}, headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401
        ok = client.post("/predict", json={"text": "좋다"}, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert client.get("/health").status_code == 200


def test_a_corrupt_weight_file_stops_serve(cli, experiment, registry_dir):
    promote(experiment, "nsmc")
    weights = registry_dir / "nsmc" / "v1" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    os.chmod(weights, 0o644)
    weights.write_bytes(bytes(data))
    with pytest.raises(UserError, match="model.safetensors fails its sha256 check; the model is corrupt"):
        create_app(registry_dir / "nsmc" / "current")
    proc = cli("serve", "--model", registry_dir / "nsmc" / "current", "--port", "0")
    assert proc.returncode == 2
    assert "fails its sha256 check" in proc.stderr


def test_predict_cli(cli, experiment, registry_dir):
    promote(experiment, "nsmc")
    proc = cli("predict", "배우들 연기가 너무 좋았다", "--model", registry_dir / "nsmc" / "current", "--json")
    assert proc.returncode == 0, proc.stderr
    line = json.loads(proc.stdout.strip().splitlines()[-1])
    assert line["label"] in ("긍정", "부정") and 0 <= line["positive_probability"] <= 1


def test_reseed_gives_s_results_per_configuration(cli, experiment, registry_dir):
    proc = cli("promote", experiment, "--name", "nsmc", "--reseed", "2", "--top-k", "2", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = json.loads(proc.stdout.strip().splitlines()[-1])
    spread = done["reseed"]
    assert spread["seeds"] == 2 and len(spread["configs"]) == 2
    for config in spread["configs"]:
        assert len(config["seeds"]) == 2 and len(set(config["seeds"])) == 2
    chosen = spread["configs"][0]
    assert chosen["rank"] == spread["chosen_rank"]
    assert chosen["val_mean"] == max(c["val_mean"] for c in spread["configs"])  # validation chooses
    card = registry.verify(registry_dir / "nsmc" / "current")
    assert card["reseed"]["best_seed"] in chosen["seeds"]
    assert card["trial_id"] == chosen["source_trial"]
    for config in json.loads((experiment / "reseed" / "reseed.json").read_text())["configs"]:
        assert len(config["runs"]) == 2
        vals = [r["val_accuracy"] for r in config["runs"]]
        assert config["val_mean"] == pytest.approx(statistics.fmean(vals))
        assert config["val_std"] == pytest.approx(statistics.stdev(vals))
