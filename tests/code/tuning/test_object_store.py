"""Issue 49, first part: an experiment on object storage (a real S3-compatible server on loopback)
ends as a local one does, and report and promote take its URI from another folder with an empty
cache, fetching no checkpoint's weights but the promoted one's."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from caviar.experiment.object_store import Mirror
from caviar.experiment.record import load_trials
from caviar.ops.local_store import BUCKET, client, free_port, keys_under, object_store
from tests.code.tuning.store_relay import Relay
from tests.code.tuning.tune_runs import TUNE, caviar_cmd, run_caviar, summary_of, tune_killed_when
from tests.conftest import FIXTURE_NSMC, TINY, tiny_job_yaml

pytestmark = pytest.mark.slow
KEEP = 2  # checkpoint.keep_best_trials


@pytest.fixture(scope="module")
def on_the_store(store, ray_head, tmp_path_factory) -> dict:
    """A tiny tune whose storage is s3://caviar/exp: the trials (on the shared head) write there."""
    tmp = tmp_path_factory.mktemp("s3tune")
    spec = {
        **TUNE,
        "num_samples": 4,
        "max_concurrent_trials": 1,
        "checkpoint": {"num_to_keep": 1, "keep_best_trials": KEEP},
    }
    job = tiny_job_yaml(tmp / "job.yaml", storage=f"s3://{BUCKET}/exp", **spec)
    env = {**ray_head, **store, "CAVIAR_CACHE": str(tmp / "cache")}
    proc = run_caviar("tune", job, "--name", "s3q", "--json", env=env)
    return {"summary": summary_of(proc), "stderr": proc.stderr}


def test_a_tune_on_the_store_ends_as_a_local_one(on_the_store, store):
    summary = on_the_store["summary"]
    uri = f"s3://{BUCKET}/exp/s3q"
    assert summary["experiment_dir"] == uri and summary["best_checkpoint"].startswith(uri + "/")
    keys = keys_under(store, "exp/s3q/")
    assert {"exp/s3q/caviar_job.json", "exp/s3q/caviar_tune.json"} <= set(keys)
    kept = {k.rsplit("/", 1)[0] for k in keys if "/checkpoint_" in k}
    assert len(kept) == KEEP, kept  # pruned on the store, to the bound a local disk keeps
    assert summary["checkpoint_bytes"] <= summary["checkpoint_bytes_bound"]
    assert f"caviar report {uri}" in on_the_store["stderr"] and "checkpoints on the store" in on_the_store["stderr"]
    assert summary["best_interval"] is not None  # the predictions came back from the store


def test_report_and_promote_take_the_uri_from_another_folder_with_an_empty_cache(
    on_the_store, store, cli, tmp_path, monkeypatch, registry_dir
):
    for name, value in store.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CAVIAR_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    uri = on_the_store["summary"]["experiment_dir"]
    report = cli("report", uri, "--json")
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout.strip().splitlines()[-1])["experiment_dir"] == uri
    assert {"exp/s3q/leaderboard.csv", "exp/s3q/report.json", "exp/s3q/param_importance.png"} <= set(
        keys_under(store, "exp/s3q/")
    )
    promoted = cli("promote", uri, "--json")
    assert promoted.returncode == 0, promoted.stderr
    card = json.loads((registry_dir / "nsmc-sentiment" / "v1" / "model_card.json").read_text())
    assert card["experiment"] == uri
    fetched = list((tmp_path / "cache" / "remote").rglob("model.safetensors"))
    assert card["source_checkpoint"].startswith(uri + "/")  # where it came from, on the store
    assert len(fetched) == 1 and card["source_checkpoint"].endswith(fetched[0].parent.name), fetched
    assert cli("predict", "배우들 연기가 너무 좋았다").returncode == 0


def test_experiments_lists_a_bucket_from_its_records_alone(on_the_store, store, cli, tmp_path, monkeypatch):
    for name, value in store.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CAVIAR_CACHE", str(tmp_path / "cache"))
    proc = cli("experiments", f"s3://{BUCKET}/exp", "--json")
    assert proc.returncode == 0, proc.stderr
    (line,) = [e for e in json.loads(proc.stdout)["experiments"] if e["name"] == "s3q"]
    summary = on_the_store["summary"]
    assert line["state"] == "finished" and line["trials"] == len(summary["trials"]) and line["job"] == "tiny"
    assert line["best"] == summary["best_val_accuracy"] and line["best_interval"] == summary["best_interval"]
    assert line["folder"] == summary["experiment_dir"] and line["size_bytes"] > 0
    assert not (tmp_path / "cache" / "remote").exists()  # nothing was mirrored to list it


def test_the_mirror_downloads_only_what_changed(on_the_store, store, tmp_path, monkeypatch):
    for name, value in store.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CAVIAR_CACHE", str(tmp_path / "cache"))
    mirror = Mirror.of(on_the_store["summary"]["experiment_dir"])
    folder = mirror.pull()
    job_file = folder / "caviar_job.json"
    first = job_file.stat().st_mtime_ns
    os.utime(job_file, ns=(first - 10**9, first - 10**9))  # an unchanged object is not fetched again
    mirror.pull()
    assert job_file.stat().st_mtime_ns == first - 10**9
    assert not list(folder.rglob("model.safetensors")) and mirror.manifest()["left_out"]
    stale = folder / "run_trial_gone" / "checkpoint_000009" / "model.safetensors"  # pruned on the store
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"weights fetched earlier")
    mirror.pull()
    assert not stale.exists()


def test_weights_damaged_on_the_store_are_refused_by_their_recorded_sha256(
    on_the_store, store, cli, tmp_path, monkeypatch, registry_dir
):
    """The best checkpoint's weights altered on the store (same size, so no listing tells): promote
    from an empty cache fetches them, finds they are not what the trial recorded, and stops in one
    line without touching the registry; it keeps no copy of them."""
    for name, value in store.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CAVIAR_CACHE", str(tmp_path / "cache"))
    key = on_the_store["summary"]["best_checkpoint"][len(f"s3://{BUCKET}/") :] + "/model.safetensors"
    s3 = client(store)
    original = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0xFF
    s3.put_object(Bucket=BUCKET, Key=key, Body=bytes(damaged))
    try:
        proc = cli("promote", on_the_store["summary"]["experiment_dir"])
    finally:
        s3.put_object(Bucket=BUCKET, Key=key, Body=original)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "model.safetensors: its sha256 is not the one its checkpoint recorded" in proc.stderr
    assert not registry_dir.exists() and not list((tmp_path / "cache").rglob("model.safetensors"))


def test_reseed_takes_the_uri_and_promote_takes_its_best_seed_from_the_store(
    on_the_store, store, ray_head, cli, tmp_path, monkeypatch, registry_dir
):
    """The seed re-runs of an experiment on the store go to the store beside it, reseed.json names
    their checkpoints by URI, and promote from another empty cache fetches the chosen seed's alone."""
    uri = on_the_store["summary"]["experiment_dir"]
    env = {**ray_head, **store, "CAVIAR_CACHE": str(tmp_path / "reseed-cache")}
    spread = summary_of(run_caviar("reseed", uri, "--seeds", "2", "--top-k", "1", "--json", env=env))
    best = spread["best_run"]["checkpoint"]
    assert best.startswith(f"{uri}/reseed/config-1/") and len(spread["configs"][0]["runs"]) == 2
    keys = set(keys_under(store, "exp/s3q/reseed/"))
    assert "exp/s3q/reseed/reseed.json" in keys and f"{best[len(f's3://{BUCKET}/') :]}/model.safetensors" in keys
    for name, value in store.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CAVIAR_CACHE", str(tmp_path / "promote-cache"))
    promoted = cli("promote", uri, "--json")
    assert promoted.returncode == 0, promoted.stderr
    card = json.loads((registry_dir / "nsmc-sentiment" / "v1" / "model_card.json").read_text())
    assert card["source_checkpoint"] == best and card["reseed"]["best_seed"] == spread["best_run"]["seed"]
    fetched = list((tmp_path / "promote-cache" / "remote").rglob("model.safetensors"))
    assert len(fetched) == 1 and best.endswith(fetched[0].parent.relative_to(fetched[0].parents[3]).as_posix())


def test_the_lr_range_test_of_a_tune_on_the_store_is_on_the_store(store, ray_head, tmp_path):
    """Stage 1 on object storage: lr_find.json and .png beside the experiment's records, and the
    search inside the range they suggest, as on a local disk (test_tune.py)."""
    spec = {**TUNE, "num_samples": 1, "search_space": {}, "scheduler": {"type": "fifo"}}
    train = {**TINY["train"], "lr": {"from_lr_find": True}, "epochs": 1}
    lr_find = {"min_lr": 1e-5, "max_lr": 1.0, "steps": 30, "eval_points": 3, "val_limit": 48}
    job = tiny_job_yaml(tmp_path / "job.yaml", storage=f"s3://{BUCKET}/lr", train=train, lr_find=lr_find, **spec)
    env = {**ray_head, **store, "CAVIAR_CACHE": str(tmp_path / "cache")}
    summary = summary_of(run_caviar("tune", job, "--name", "lrs", "--json", env=env))
    s3 = client(store)
    found = json.loads(s3.get_object(Bucket=BUCKET, Key="lr/lrs/lr_find.json")["Body"].read())
    assert s3.get_object(Bucket=BUCKET, Key="lr/lrs/lr_find.png")["Body"].read().startswith(b"\x89PNG")
    resolved = json.loads(s3.get_object(Bucket=BUCKET, Key="lr/lrs/caviar_job.json")["Body"].read())
    assert resolved["search_space"]["train.lr"]["loguniform"] == [found["base_lr"], found["max_lr"]]
    (trial,) = summary["trials"]
    assert found["base_lr"] <= trial["params"]["train.lr"] <= found["max_lr"]


def test_stage0_of_a_tune_on_the_store_is_put_there_and_found_again_by_its_key(store, tmp_path, monkeypatch):
    """The pretrained folder goes to <storage>/pretrain/ on the store, its card last; a second job
    with the same key takes it from there, from a machine that holds nothing of it."""
    from caviar.job.loading import load_job
    from caviar.tuning.pipeline import resolve
    from caviar.tuning.stages.pretrain_stage import pretrain_stage

    for name, value in store.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CAVIAR_CACHE", str(tmp_path / "first"))
    model = {**TINY["model"], "pretrained": {"from_pretrain": True}}
    pretrain = {"epochs": 1, "batch_size": 16, "lr": 3e-3, "log_every": 4}
    path = tiny_job_yaml(tmp_path / "job.yaml", storage=f"s3://{BUCKET}/stage0", model=model, pretrain=pretrain)
    resolved = resolve(load_job(path))
    made_job, made = pretrain_stage(resolved.job, resolved.splits, progress=False)
    assert not made.reused and made.folder.startswith(f"s3://{BUCKET}/stage0/pretrain/")
    assert made_job.model.pretrained == made.folder
    keys = keys_under(store, made.folder[len(f"s3://{BUCKET}/") :] + "/")
    assert {"config.json", "model.safetensors", "pretrain.json"} <= {k.rsplit("/", 1)[1] for k in keys}
    assert not list((tmp_path / "first" / "pretrain-staging").iterdir())  # the staging copy is gone

    monkeypatch.setenv("CAVIAR_CACHE", str(tmp_path / "second"))
    found_job, found = pretrain_stage(resolved.job, resolved.splits, progress=False)
    assert found.reused and found.folder == made.folder and found_job.model.pretrained == made.folder


def test_a_fused_tune_on_the_store_ends_as_a_local_one_and_its_member_is_promoted(
    store, ray_head, cli, tmp_path, monkeypatch, registry_dir
):
    """`fuse: K` on object storage: each member's folder (records, checkpoints) reaches the store from
    the trial's node, the outcome ranks the members, pruning keeps the best members' checkpoints,
    and promote from an empty cache takes a member's."""
    space = {"train.lr": {"loguniform": [2e-3, 1e-2]}, "train.init_seed": {"choice": [1, 2, 3]}}
    spec = {**TUNE, "search_space": space, "num_samples": 3, "fuse": 3, "max_concurrent_trials": 1}
    spec |= {"scheduler": {"type": "fifo"}, "checkpoint": {"num_to_keep": 1, "keep_best_trials": 2}}
    train = {**TINY["train"], "epochs": 2, "eval_every": 1.0}
    job = tiny_job_yaml(tmp_path / "job.yaml", storage=f"s3://{BUCKET}/fused", train=train, **spec)
    env = {**ray_head, **store, "CAVIAR_CACHE": str(tmp_path / "driver")}
    summary = summary_of(run_caviar("tune", job, "--name", "f", "--json", env=env))
    assert len(summary["trials"]) == 3 and all("_m" in t["trial_id"] for t in summary["trials"])
    assert all(t["evaluations"] == 2 for t in summary["trials"])
    keys = keys_under(store, "fused/f/")
    members = {k.split("/members/")[1].split("/")[0] for k in keys if "/members/" in k and k.endswith("/result.json")}
    assert members == {t["trial_id"] for t in summary["trials"]}
    kept = {k.split("/members/")[1].rsplit("/", 1)[0] for k in keys if "/members/" in k and "/checkpoint_" in k}
    assert len(kept) == 2 and summary["best_checkpoint"].startswith(f"s3://{BUCKET}/fused/f/")

    for name, value in store.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CAVIAR_CACHE", str(tmp_path / "promoter"))
    promoted = cli("promote", summary["experiment_dir"], "--json")
    assert promoted.returncode == 0, promoted.stderr
    card = json.loads((registry_dir / "nsmc-sentiment" / "v1" / "model_card.json").read_text())
    assert card["trial_id"] == summary["best_trial"] and card["source_checkpoint"] == summary["best_checkpoint"]


def test_the_store_going_away_mid_run_ends_in_one_line_and_resume_finishes_every_trial(store, ray_head, tmp_path):
    """The store stops answering once a trial's second checkpoint is on it (an event), for the driver
    and the trials alike: the run ends in one line naming `caviar resume <URI>`, exit 2. With the
    store back, that resume finishes every trial and records no evaluation twice."""
    relay = Relay(int(store["AWS_ENDPOINT_URL"].rsplit(":", 1)[1])).start()
    through = {**store, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{relay.port}"}
    env = {**ray_head, **through, "CAVIAR_CACHE": str(tmp_path / "cache")}
    spec = {**TUNE, "num_samples": 2, "max_concurrent_trials": 1, "scheduler": {"type": "fifo"}}
    spec["max_failures"] = 0  # a retry would only meet the same closed store, after its timeouts
    job = tiny_job_yaml(tmp_path / "job.yaml", storage=f"s3://{BUCKET}/outage", **spec)
    uri = f"s3://{BUCKET}/outage/o"
    with open(tmp_path / "stderr.txt", "w") as err:
        command = caviar_cmd("tune", job, "--name", "o")
        driver = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 300  # a bound on a stuck run only
        while not any("/checkpoint_000001/" in key for key in keys_under(store, "outage/o/")):
            assert driver.poll() is None and time.monotonic() < deadline, (tmp_path / "stderr.txt").read_text()[-3000:]
            time.sleep(0.05)
        relay.stop()
        code = driver.wait(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    last = (tmp_path / "stderr.txt").read_text().strip().splitlines()[-1]
    assert code == 2 and last.startswith(f"caviar: error: {uri}: the store stopped answering"), last
    assert last.endswith(f"caviar resume {uri}"), last

    relay.start()
    try:
        resumed = summary_of(run_caviar("resume", uri, "--json", env={**env, "CAVIAR_CACHE": str(tmp_path / "fresh")}))
    finally:
        relay.stop()
    assert len(resumed["trials"]) == 2 and all(t["status"] == "finished" for t in resumed["trials"])
    with pytest.MonkeyPatch.context() as patch:
        for name, value in store.items():
            patch.setenv(name, value)
        patch.setenv("CAVIAR_CACHE", str(tmp_path / "reader"))
        trials = load_trials(Mirror.of(uri).pull())
    for trial in trials:
        iterations, steps = list(trial.history["training_iteration"]), list(trial.history["step"])
        assert iterations == list(range(1, len(iterations) + 1)) and steps == sorted(set(steps)), trial.trial_id


def test_the_readmes_object_store_lines_run_as_printed(store, ray_head, tmp_path):
    """The README's "On a cluster" object-store block, against the store `objectstore up` would give
    (the same bucket name): tune in its smoke form on the fixture reviews, then report and
    TensorBoard on the experiment's URI as printed."""
    from tests.code.test_readme import readme_commands

    lines = [c for c in readme_commands() if "s3://caviar/experiments" in c]
    assert [c.split()[0].rsplit("/", 1)[-1] + " " + c.split()[1] for c in lines] == [
        "caviar tune",
        "caviar report",
        "tensorboard --logdir",
    ]
    env = {**ray_head, **store, "CAVIAR_CACHE": str(tmp_path / "cache")}
    smoke = ["--smoke", "--set", f"data.dir={FIXTURE_NSMC}", "--json"]
    summary = summary_of(run_caviar(*shlex.split(lines[0])[1:], *smoke, env=env))
    uri = summary["experiment_dir"]
    assert uri.startswith("s3://caviar/experiments/")
    printed = [line.replace("s3://caviar/experiments/<experiment>", uri) for line in lines[1:]]
    report = run_caviar(*shlex.split(printed[0])[1:], env=env)
    assert report.returncode == 0 and "| rank |" in report.stdout, report.stderr[-2000:]
    logdir = shlex.split(printed[1])[2]
    scalars, _ = tensorboard_reads(logdir, store, tmp_path / "tensorboard.log")
    assert any("val_accuracy" in tags for tags in scalars.values()), scalars


def test_a_missing_bucket_is_one_line_before_any_trial(store, cli, tmp_path, monkeypatch):
    for name, value in store.items():
        monkeypatch.setenv(name, value)
    job = tiny_job_yaml(tmp_path / "job.yaml", storage="s3://no-such-bucket/exp")
    proc = cli("tune", job)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (
        "caviar: error: storage s3://no-such-bucket/exp: the bucket no-such-bucket does not exist; "
        "create it, or point storage elsewhere"
    )


def test_wrong_keys_are_one_line_before_any_trial(cli, tmp_path, monkeypatch, registry_dir):
    """A store that checks keys (as every real one does): the issued keys pass the check, a wrong
    secret or an unknown key is one line naming the setting to fix, exit 2, for tune and promote."""
    from caviar.experiment.object_store import check_reachable

    job = tiny_job_yaml(tmp_path / "job.yaml", storage=f"s3://{BUCKET}/exp")
    with object_store(tmp_path / "moto.log", keys_checked=True) as env:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        check_reachable(f"s3://{BUCKET}/exp")  # the keys it issued work
        for wrong in ({"AWS_SECRET_ACCESS_KEY": "not-the-secret"}, {"AWS_ACCESS_KEY_ID": "AKIANOSUCHKEY"}):
            with monkeypatch.context() as patch:
                for name, value in wrong.items():
                    patch.setenv(name, value)
                tuned = cli("tune", job)
                promoted = cli("promote", f"s3://{BUCKET}/exp/s3q")
            for proc in (tuned, promoted):
                assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
                assert "check AWS_" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not registry_dir.exists()


def test_a_store_that_does_not_answer_is_one_line_and_promote_changes_nothing(
    store, cli, tmp_path, monkeypatch, registry_dir
):
    for name, value in store.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    job = tiny_job_yaml(tmp_path / "job.yaml", storage=f"s3://{BUCKET}/exp")
    tuned = cli("tune", job)
    assert tuned.returncode == 2 and "the store does not answer" in tuned.stderr and len(tuned.stderr.splitlines()) == 1
    promoted = cli("promote", f"s3://{BUCKET}/exp/s3q")
    assert promoted.returncode == 2 and "the store does not answer" in promoted.stderr, promoted.stderr
    assert not registry_dir.exists()


def holds_scalar(store: dict, key: str, tag: str, scratch: Path) -> bool:
    """Whether the event file at `key` holds a value of `tag` yet (the driver uploads its copy as it grows)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    client(store).download_file(BUCKET, key, str(scratch))
    return any(value.tag == tag for event in EventFileLoader(str(scratch)).Load() for value in event.summary.value)


def tensorboard_reads(logdir: str, store: dict, log: Path) -> tuple[dict, dict]:
    """`tensorboard --logdir <URI>` on loopback: its scalar tags per run, once some are loaded, and
    its HParams table's columns."""
    port = free_port()
    command = [str(Path(sys.executable).parent / "tensorboard"), "--logdir", logdir, "--host", "127.0.0.1"]
    with open(log, "wb") as out:
        board = subprocess.Popen([*command, "--port", str(port)], env={**os.environ, **store}, stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}/data/plugin"
    try:
        deadline = time.monotonic() + 120  # a bound on a stuck server only: it loads within seconds
        while True:
            assert board.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            try:
                scalars = httpx.get(f"{url}/scalars/tags", timeout=10).json()
            except httpx.TransportError:
                scalars = {}  # not listening yet
            if scalars:
                break
            time.sleep(0.5)
        hparams = httpx.post(f"{url}/hparams/experiment", json={"experimentName": ""}, timeout=30).json()
        return scalars, hparams
    finally:
        board.terminate()
        board.wait(timeout=30)


def test_a_driver_killed_on_the_store_resumes_with_an_empty_cache(store, ray_head, tmp_path):
    """The driver is killed once a trial's second checkpoint is on the store (an event, not a time);
    TensorBoard reads the trials' scalars and HParams from the store; `caviar resume <URI>` from a
    fresh cache finishes every trial and records no evaluation twice."""
    spec = {**TUNE, "num_samples": 3, "max_concurrent_trials": 1, "scheduler": {"type": "fifo"}}
    job = tiny_job_yaml(tmp_path / "job.yaml", storage=f"s3://{BUCKET}/killed", **spec)
    own_ray = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own Ray, killed with it
    env = {**own_ray, **store, "CAVIAR_CACHE": str(tmp_path / "driver-cache")}

    def second_checkpoint_and_scalars() -> bool:
        keys = keys_under(store, "killed/k/")
        if not any("/checkpoint_000001/" in key for key in keys):
            return False
        return any(holds_scalar(store, key, "val_accuracy", tmp_path / "events") for key in keys if "tfevents" in key)

    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        tune_killed_when(job, second_checkpoint_and_scalars, what="a second checkpoint", name="k")
    assert "killed/k/caviar_tune.json" not in keys_under(store, "killed/k/")  # it did not finish
    # what the trials wrote while they ran, read by TensorBoard from the store (boto3, AWS_ENDPOINT_URL)
    scalars, hparams = tensorboard_reads(f"s3://{BUCKET}/killed/k", store, tmp_path / "tensorboard.log")
    assert any({"val_accuracy", "val_loss"} <= set(tags) for tags in scalars.values()), scalars
    assert {"train.lr", "train.weight_decay"} <= {h["name"] for h in hparams["hparamInfos"]}, hparams
    fresh = {**ray_head, **store, "CAVIAR_CACHE": str(tmp_path / "fresh")}  # another driver, on the shared head
    resumed = summary_of(run_caviar("resume", f"s3://{BUCKET}/killed/k", "--json", env=fresh))
    ended = [(t["trial_id"], t["status"], t["evaluations"], t.get("stopped_by")) for t in resumed["trials"]]
    assert len(resumed["trials"]) == 3 and all(t["status"] == "finished" for t in resumed["trials"]), ended
    with pytest.MonkeyPatch.context() as patch:
        for name, value in store.items():
            patch.setenv(name, value)
        patch.setenv("CAVIAR_CACHE", str(tmp_path / "reader"))
        trials = load_trials(Mirror.of(f"s3://{BUCKET}/killed/k").pull())
    for trial in trials:
        iterations, steps = list(trial.history["training_iteration"]), list(trial.history["step"])
        assert iterations == list(range(1, len(iterations) + 1)) and steps == sorted(set(steps)), trial.trial_id
