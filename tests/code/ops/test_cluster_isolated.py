"""Issue 49: a cluster whose nodes share no disk, as a real one (cluster/local.sh up 2 --isolated),
with the experiments on an S3-compatible store on loopback. A job submitted there keeps everything
on the store, and report, promote and predict then work from a shell with an empty cache; a job
with a local storage folder is refused before its first trial."""

from __future__ import annotations

import json

import pytest

from caviar.ops.local_store import BUCKET, client, keys_under
from tests.code.ops.ray_cluster import caviar, crash_lines, running_cluster
from tests.conftest import TINY

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def isolated(store):
    with running_cluster(workers=2, isolated=True) as up:
        up.env.update(store)  # the submitting shell has the store's settings; submit passes them on
        yield up


def test_a_job_on_the_store_runs_on_nodes_that_share_no_disk(isolated, store, cluster_job, tmp_path):
    """With stage 0 too: the pretrained folder is made on the head and put on the store, where the
    trials on the other nodes fetch it (none of them sees the head's disk)."""
    job = cluster_job(
        {
            "storage": f"s3://{BUCKET}/cluster",
            "checkpoint": {"num_to_keep": 1, "keep_best_trials": 2},
            "model": {**TINY["model"], "pretrained": {"from_pretrain": True}},
            "pretrain": {"epochs": 1, "batch_size": 16, "lr": 3e-3, "log_every": 4},
        }
    )
    proc = caviar("submit", job, "--address", isolated.address, "--follow", env=isolated.env, timeout=600)
    if proc.returncode != 0:
        pytest.fail(crash_lines(proc.stdout) + proc.stdout[-3000:] + proc.stderr[-2000:] + isolated.log_crashes())
    keys = keys_under(store, "cluster/")
    (name,) = {key.split("/")[1] for key in keys if key.endswith("/caviar_tune.json")}
    uri = f"s3://{BUCKET}/cluster/{name}"
    outcome = [line for line in proc.stdout.splitlines() if line.startswith("experiment: ")]
    assert outcome == [f"experiment: {uri}"], proc.stdout[-2000:]
    trials = {key.split("/")[2] for key in keys if key.endswith("/result.json") and key.split("/")[1] == name}
    assert len(trials) == 4 and len({k.rsplit("/", 1)[0] for k in keys if "/checkpoint_" in k}) == 2
    cards = [k for k in keys_under(store, "cluster/pretrain/") if k.endswith("/pretrain.json")]
    (stage0,) = {k.rsplit("/", 1)[0] for k in cards}
    resolved = json.loads(client(store).get_object(Bucket=BUCKET, Key=f"cluster/{name}/caviar_job.json")["Body"].read())
    assert resolved["model"]["pretrained"] == f"s3://{BUCKET}/{stage0}"

    shell = {**isolated.env, "CAVIAR_CACHE": str(tmp_path / "cache"), "CAVIAR_REGISTRY": str(tmp_path / "reg")}
    assert caviar("report", uri, env=shell).returncode == 0
    promoted = caviar("promote", uri, "--json", env=shell)
    assert promoted.returncode == 0, promoted.stderr
    assert json.loads(promoted.stdout.strip().splitlines()[-1])["version"] == "v1"
    card = json.loads((tmp_path / "reg" / "nsmc-sentiment" / "v1" / "model_card.json").read_text())
    assert card["pretrained"]["source"] == resolved["model"]["pretrained"] and card["pretrained"]["fingerprint"]
    predicted = caviar("predict", "배우들 연기가 너무 좋았다", env=shell)
    assert predicted.returncode == 0 and predicted.stdout.split()[0] in ("긍정", "부정"), predicted.stderr


def test_local_storage_on_nodes_that_share_no_disk_is_refused_before_any_trial(isolated, cluster_job, tmp_path):
    job = cluster_job()  # storage: a folder on the head's disk
    proc = caviar("submit", job, "--address", isolated.address, "--follow", env=isolated.env, timeout=600)
    assert proc.returncode == 1 and "FAILED" in proc.stdout, proc.stdout[-3000:]
    assert "of the cluster's nodes do not see it" in proc.stdout and "storage=s3://" in proc.stdout
    assert "Traceback" not in proc.stdout
    assert not list((tmp_path / "shared").glob("*/experiment_state-*.json"))  # no trial ever ran
