"""Issue 51, item 2: MLflow's model registry as caviar's registry, through a real `mlflow server` on
loopback (SQLite; one test on PostgreSQL with its artifacts on the S3-compatible store). Promote
registers a pyfunc version and moves `@champion` only past the gate; a refused candidate is
`@challenger`; rollback, list, predict and serve resolve the alias, check every sha256, and a
running service follows the alias under load with no failed request."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from caviar.ops.local_mlflow import mlflow_server
from caviar.ops.local_store import free_port
from caviar.registry.mlflow_promote import promote_to_mlflow, rollback_in_mlflow
from caviar.registry.mlflow_registry import CHALLENGER, CHAMPION, MlflowRegistry
from caviar.registry.store import Refused
from caviar.serving.app import MODEL_HEADER, create_app
from caviar.serving.live import AliasSource
from tests.code.serving.test_app import served
from tests.code.serving.test_follow import Load, wait_for
from tests.conftest import variant_of

pytestmark = pytest.mark.slow
CAVIAR = [sys.executable, "-m", "caviar"]


@pytest.fixture
def on_mlflow(mlflow_uri, tmp_path, monkeypatch) -> str:
    """CAVIAR_REGISTRY naming the session's MLflow server, and a cache of this test's own."""
    monkeypatch.setenv("CAVIAR_REGISTRY", f"mlflow:{mlflow_uri}")
    monkeypatch.setenv("CAVIAR_CACHE", str(tmp_path / "cache"))
    return mlflow_uri


def test_promote_gate_challenger_rollback_list_predict_and_pyfunc(cli, experiment, on_mlflow, tmp_path):
    from mlflow.tracking import MlflowClient

    first = cli("promote", experiment, "--name", "nsmc-a", "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout.splitlines()[-1])["version"] == "v1"  # stdout is caviar's: one JSON line
    again = cli("promote", experiment, "--name", "nsmc-a")
    assert again.returncode == 0 and "already holds this checkpoint" in again.stdout
    refused = cli("promote", variant_of(experiment, tmp_path / "tie"), "--name", "nsmc-a")  # no gain: refused
    assert refused.returncode == 1 and refused.stderr.strip().splitlines()[-1].endswith(
        f"registered as nsmc-a/v2@{CHALLENGER}"
    ), refused.stderr
    forced = cli("promote", variant_of(experiment, tmp_path / "forced", nudge=2e-4), "--name", "nsmc-a", "--force")
    assert forced.returncode == 0, forced.stderr

    client = MlflowClient(on_mlflow)
    versions = {int(v.version): v for v in client.search_model_versions("name = 'nsmc-a'")}
    assert sorted(versions) == [1, 2, 3]  # the same checkpoint twice made no new version
    assert client.get_model_version_by_alias("nsmc-a", CHAMPION).version == "3"
    assert client.get_model_version_by_alias("nsmc-a", CHALLENGER).version == "2"
    two, three = versions[2].tags, versions[3].tags
    assert two["caviar.refused"].startswith("not promoted: +0.00 points") and two["caviar.gate.passed"] == "False"
    assert three["caviar.forced"] == "True" and three["caviar.previous"] == "v1"
    for key in ("job", "trial_id", "val_accuracy", "test_accuracy", "data_fingerprint", "gate.reviews"):
        assert f"caviar.{key}" in three, key
    assert {k for k in three if k.startswith("caviar.sha256.")} >= {
        "caviar.sha256.model.safetensors",
        "caviar.sha256.caviar.json",
    }

    listed = cli("registry", "list", "--json")
    rows = {r["version"]: r for r in json.loads(listed.stdout) if r["name"] == "nsmc-a"}
    assert rows["v3"]["current"] and rows["v3"]["aliases"] == [CHAMPION] and rows["v2"]["aliases"] == [CHALLENGER]
    assert "refused" in rows["v2"]["gate"] and rows["v1"]["gate"].startswith("the first champion")

    shown = cli("registry", "show", "nsmc-a/v2")
    assert shown.returncode == 0 and json.loads(shown.stdout)["version"] == "v2", shown.stderr
    assert json.loads(cli("registry", "show", "nsmc-a").stdout)["version"] == "v3"  # @champion

    rolled = cli("registry", "rollback", "nsmc-a")  # past the refused v2, to v1
    assert rolled.returncode == 0 and rolled.stdout.strip() == "nsmc-a: @champion v3 -> v1", rolled.stderr
    assert cli("registry", "rollback", "nsmc-a", "--to", "v3").returncode == 0
    _predict_pyfunc_and_sums(cli, tmp_path / "cache", on_mlflow)


def _predict_pyfunc_and_sums(cli, cache: Path, uri: str) -> None:
    """caviar predict and MLflow's pyfunc agree on @champion; a cached file altered is caught."""
    import mlflow.pyfunc

    with pytest.MonkeyPatch.context() as patch:  # where models:/ resolves (MLflow's default is ./mlflow.db)
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        model = mlflow.pyfunc.load_model("models:/nsmc-a@champion")  # no caviar code beyond the package
    predicted = cli("predict", "정말 재미있어요", "--name", "nsmc-a", "--json")
    assert predicted.returncode == 0, predicted.stderr
    mine = json.loads(predicted.stdout)
    theirs = model.predict(["정말 재미있어요", "최악"])
    assert list(theirs.columns) == ["label", "confidence", "positive_probability"]
    assert theirs["label"][0] == mine["label"] and theirs["confidence"][0] == pytest.approx(mine["confidence"])

    fetched = next((cache / "mlflow-registry").glob("*/nsmc-a/v3"))
    with open(fetched / "model.safetensors", "ab") as weights:
        weights.write(b"\0")  # the cached copy altered: the version's tags catch it
    broken = cli("predict", "재미있어요", "--name", "nsmc-a")
    assert broken.returncode == 2 and broken.stderr.strip().splitlines()[-1] == (
        "caviar: error: nsmc-a/v3: model.safetensors fails its sha256 check; the model is corrupt"
    )
    shutil.rmtree(fetched)  # fetched again, whole
    assert cli("predict", "재미있어요", "--name", "nsmc-a").returncode == 0


def test_a_service_follows_the_champion_under_16_clients_with_no_failed_request(experiment, on_mlflow, tmp_path):
    promote_to_mlflow(experiment, "nsmc-b", on_mlflow)
    variant = variant_of(experiment, tmp_path / "variant")
    source = AliasSource(MlflowRegistry(on_mlflow, "nsmc-b"), CHAMPION)
    app = create_app(None, source=source, follow_every_s=0.1, log=lambda _: None)
    with served(app) as port, Load(port, model="nsmc-b") as load:
        wait_for(lambda: len(load.answers) >= 50, what="load")
        promote_to_mlflow(variant, "nsmc-b", on_mlflow, force=True)
        wait_for(lambda: load.now_serving() == "nsmc-b/v2", timeout_s=60, what="the promotion to reach the service")
        on_v2 = len(load.answers)
        wait_for(lambda: len(load.answers) >= on_v2 + 50, what="load on v2")
        assert rollback_in_mlflow(on_mlflow, "nsmc-b") == (2, 1)
        wait_for(lambda: load.now_serving() == "nsmc-b/v1" and len(load.answers) >= on_v2 + 100, what="rollback")
    failed = [a for a in load.answers if a[2] != 200]
    assert not failed, failed[:5]
    assert {a[3] for a in load.answers} == {"nsmc-b/v1", "nsmc-b/v2"}
    for sent, answered, _, version in load.answers:
        assert version in load.named_then(sent, answered), (version, sent, answered)


def test_two_promotes_at_once_give_two_versions_and_one_consistent_alias(experiment, on_mlflow, tmp_path):
    """Two processes promote two candidates at once: one gates first and becomes @champion, the
    other gates against it (a tie) and is registered as @challenger."""
    candidates = [variant_of(experiment, tmp_path / f"c{i}", nudge=(i + 1) * 1e-4) for i in range(2)]
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    runs = [
        subprocess.Popen([*CAVIAR, "promote", str(c), "--name", "nsmc-c"], env=env, stderr=subprocess.PIPE, text=True)
        for c in candidates
    ]
    ended = [(run.wait(timeout=300), run.stderr.read()) for run in runs]
    assert sorted(code for code, _ in ended) == [0, 1], ended
    registry = MlflowRegistry(on_mlflow, "nsmc-c")
    assert [int(v.version) for v in registry.versions()] == [1, 2]
    champion, challenger = registry.alias(CHAMPION), registry.alias(CHALLENGER)
    assert {champion, challenger} == {1, 2}
    assert registry.version(champion).tags["caviar.gate"].startswith("the first champion")
    assert registry.version(challenger).tags["caviar.gate.against"] == f"v{champion}"


def test_the_one_line_errors(cli, experiment, on_mlflow, monkeypatch):
    nowhere = f"mlflow:http://127.0.0.1:{free_port()}"
    for command in (["registry", "list"], ["predict", "좋아요"], ["promote", str(experiment)]):
        proc = cli(*command, "--registry", nowhere)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "did not answer" in proc.stderr, proc.stderr
    missing = cli("predict", "좋아요", "--name", "no-such-model")
    assert missing.returncode == 2 and missing.stderr.strip() == (
        f"caviar: error: no-such-model: no such registered model in MLflow at {on_mlflow}; promote one first"
    )
    assert cli("registry", "list", "--registry", "mlflow:").returncode == 2
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)  # the extra not installed
    proc = cli("registry", "list")
    assert proc.returncode == 2 and "pip install 'caviar[mlflow]'" in proc.stderr and proc.stderr.count("\n") == 1


@contextlib.contextmanager
def postgres():
    """A throwaway PostgreSQL 15 cluster on a loopback port, run as the postgres user (in a folder
    of its own: pytest's are root's alone); its URI. Stopped and removed at the end."""
    bin_dir = Path("/usr/lib/postgresql/15/bin")
    if not bin_dir.is_dir() or os.geteuid() != 0:
        pytest.skip("PostgreSQL 15 and root (to run it as the postgres user) are needed")
    folder, port = Path(tempfile.mkdtemp(prefix="caviar-pg-")), free_port()
    shutil.chown(folder, "postgres")
    as_postgres = ["runuser", "-u", "postgres", "--"]

    def run(tool: str, *args: str) -> None:
        done = subprocess.run([*as_postgres, str(bin_dir / tool), *args], capture_output=True, text=True)
        assert done.returncode == 0, f"{tool}: {done.stdout[-1000:]} {done.stderr[-1000:]}"

    data = str(folder / "data")
    try:
        run("initdb", "-D", data, "-A", "trust", "-U", "postgres")
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
        run("pg_ctl", "-D", data, "-o", options, "-l", str(folder / "pg.log"), "-w", "start")
        try:
            run("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "mlflow")
            yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/mlflow"
        finally:
            run("pg_ctl", "-D", data, "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_the_registry_on_a_postgresql_backend_with_artifacts_on_the_object_store(
    cli, experiment, store, tmp_path, monkeypatch
):
    """The same path on a production-shaped server: PostgreSQL behind it, artifacts on s3://."""
    for name, value in store.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", store["AWS_ENDPOINT_URL"])
    monkeypatch.setenv("CAVIAR_CACHE", str(tmp_path / "cache"))
    with (
        postgres() as database,
        mlflow_server(tmp_path / "mlflow", backend=database, artifacts="s3://caviar/mlflow-artifacts") as uri,
    ):
        monkeypatch.setenv("CAVIAR_REGISTRY", f"mlflow:{uri}")
        assert cli("promote", experiment, "--name", "nsmc-pg").returncode == 0
        with pytest.raises(Refused):
            promote_to_mlflow(variant_of(experiment, tmp_path / "tie"), "nsmc-pg", uri)
        registry = MlflowRegistry(uri, "nsmc-pg")
        assert (registry.alias(CHAMPION), registry.alias(CHALLENGER)) == (1, 2)
        predicted = cli("predict", "재미있어요", "--name", "nsmc-pg")
        assert predicted.returncode == 0, predicted.stderr
        source = AliasSource(registry, CHAMPION)
        with TestClient(create_app(None, source=source, log=lambda _: None)) as client:
            answer = client.post("/predict", json={"text": "재미있어요"})
            assert answer.status_code == 200 and answer.headers[MODEL_HEADER] == "nsmc-pg/v1"
    keys = _keys(store, "mlflow-artifacts/")
    assert any(k.endswith("/model/artifacts/checkpoint/model.safetensors") for k in keys), keys[:10]


def _keys(store: dict, prefix: str) -> list[str]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=store["AWS_ENDPOINT_URL"])
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket="caviar", Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]
