"""Issue 48: what a new user hit in one afternoon, each as it was reported, now fixed."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
from pathlib import Path

import pytest

from caviar.experiment.outcome import runnable
from caviar.job.loading import load_job
from caviar.registry.promote import promote
from model.config import DataConfig
from model.data import EXPECTED_ROWS, HEADER, TEST_FILE, TRAIN_FILE, locate_nsmc
from model.errors import UserError
from tests.conftest import FIXTURE_NSMC

ROOT = Path(__file__).parents[3]
QUICKSTART = ROOT / "tune_jobs" / "quickstart.yaml"


def test_a_set_on_a_searched_key_pins_it_and_says_so(caplog):
    """48.1: the README's own `--set train.lr=3e-4` was sampled over; now it is the value every trial gets."""
    caplog.set_level(logging.INFO, logger="caviar.job")
    job = load_job(QUICKSTART, ["num_samples=16", "train.lr=3e-4"])
    assert job.train.lr == 3e-4 and "train.lr" not in job.search_space
    assert set(job.search_space) == {"train.weight_decay", "train.schedule", "model.dropout"}  # the rest still searched
    recorded = job.model_dump(mode="json")  # what caviar_job.json holds
    assert "train.lr" not in recorded["search_space"] and recorded["train"]["lr"] == 3e-4
    assert [r.getMessage() for r in caplog.records] == ["train.lr pinned at 0.0003 (removed from search_space)"]


def test_a_set_on_a_fixed_key_pins_nothing(caplog):
    caplog.set_level(logging.INFO, logger="caviar.job")
    job = load_job(QUICKSTART, ["train.epochs=1"])
    assert "train.lr" in job.search_space and job.train.epochs == 1
    assert not caplog.records


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tune", "tune_jobs/quikstart.yaml"], "no such job file; did you mean tune_jobs/quickstart.yaml?"),
        (
            ["tune", "tune_jobs/quickstart.yaml", "--set", "search_space.train.lr={logunifrom: [1e-4, 1e-3]}"],
            "search_space.train.lr.logunifrom: unknown key; did you mean loguniform?",
        ),
        (["promote", "results/no-such-experiment"], "results/no-such-experiment: no such folder"),
        (["resume", "results/no-such-experiment"], "results/no-such-experiment: no such folder"),
    ],
)
def test_mistakes_get_one_line_with_a_suggestion(cli, monkeypatch, args, message):
    """48.7: a misspelt distribution or job path gets "did you mean"; a missing folder is said to be missing."""
    monkeypatch.chdir(ROOT)
    proc = cli(*args)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("caviar: error: ") and line.endswith(message), line


def test_version(cli):
    from importlib import metadata

    proc = cli("--version")
    assert proc.returncode == 0
    assert proc.stdout.startswith(f"caviar {metadata.version('caviar')} (ray {metadata.version('ray')}, torch ")


def test_local_sh_down_with_nothing_up_says_so(tmp_path):
    env = {"CAVIAR_CLUSTER_DIR": str(tmp_path / "none"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(["bash", ROOT / "cluster" / "local.sh", "down"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and "nothing to stop" in proc.stdout and "cluster stopped" not in proc.stdout


def test_the_printed_promote_runs_from_any_folder_and_predict_finds_it(cli, experiment, tmp_path, monkeypatch):
    """48.2: the registry is the user's (XDG data folder), not <working folder>/results/registry."""
    monkeypatch.delenv("CAVIAR_REGISTRY", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    registry = tmp_path / "data" / "caviar" / "registry"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    promoted = cli("promote", experiment, "--force")
    assert promoted.returncode == 0, promoted.stderr
    assert f"caviar: registry: {registry}" in promoted.stderr
    assert (registry / "nsmc-sentiment" / "v1").is_dir() and not (elsewhere / "results").exists()
    monkeypatch.chdir(ROOT)
    predicted = cli("predict", "이 영화 정말 재미있어요")
    assert predicted.returncode == 0 and predicted.stdout.split()[0] in ("긍정", "부정"), predicted.stderr
    assert f"caviar: registry: {registry}" in predicted.stderr
    listed = cli("registry", "list")
    assert listed.stdout.splitlines()[0] == f"registry: {registry}" and "nsmc-sentiment/v1" in listed.stdout
    shown = cli("registry", "show", "nsmc-sentiment/v1")  # the form `registry list` prints
    assert shown.returncode == 0 and json.loads(shown.stdout)["version"] == "v1", shown.stderr


def test_an_earlier_registry_in_results_is_named_with_the_command_that_moves_it(cli, tmp_path, monkeypatch):
    monkeypatch.delenv("CAVIAR_REGISTRY", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    (tmp_path / "project" / "results" / "registry" / "nsmc-sentiment" / "v1").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "project")
    listed = cli("registry", "list")
    old, new = tmp_path / "project" / "results" / "registry", tmp_path / "data" / "caviar" / "registry"
    note = next(ln for ln in listed.stdout.splitlines() if ln.startswith("note:"))
    assert f"{old} holds models of an earlier caviar" in note and f"mkdir -p {new} && mv {old}/* {new}/" in note
    missing = cli("predict", "좋아요")
    assert missing.returncode == 2 and f"an earlier caviar's registry is in {old}" in missing.stderr


def _full_nsmc(folder: Path) -> Path:
    """Files shaped like the whole of NSMC (its header and row counts), from the fixture's reviews."""
    reviews = (FIXTURE_NSMC / TRAIN_FILE).read_text(encoding="utf-8").splitlines()[1:]
    folder.mkdir()
    for name in (TRAIN_FILE, TEST_FILE):
        rows = (reviews[i % len(reviews)] for i in range(EXPECTED_ROWS[name]))
        (folder / name).write_text(HEADER + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return folder


def test_nsmc_found_through_nsmc_dir_fills_the_cache(tmp_path, monkeypatch):
    """48.3: after `make tune` (which finds NSMC through NSMC_DIR) every command finds it without NSMC_DIR."""
    monkeypatch.setenv("CAVIAR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("NSMC_DIR", str(FIXTURE_NSMC))  # a sample: not the corpus, not cached
    assert locate_nsmc(DataConfig()) == FIXTURE_NSMC and not (tmp_path / "cache" / "nsmc").exists()
    full = _full_nsmc(tmp_path / "nsmc")
    monkeypatch.setenv("NSMC_DIR", str(full))
    assert locate_nsmc(DataConfig()) == full
    monkeypatch.delenv("NSMC_DIR")
    cached = tmp_path / "cache" / "nsmc"
    assert locate_nsmc(DataConfig(download_url="http://127.0.0.1:9/none")) == cached
    assert (cached / TRAIN_FILE).read_bytes() == (full / TRAIN_FILE).read_bytes()


def test_next_commands_of_a_cluster_job_are_spelt_with_the_submitting_machines_caviar(monkeypatch, tmp_path):
    """48.4: a job run by `caviar submit` printed bare `caviar report ...`; the user's shell had none."""
    monkeypatch.setenv("CAVIAR_CLIENT_BIN", str(tmp_path / "venv" / "bin"))
    assert runnable("caviar") == str(tmp_path / "venv" / "bin" / "caviar")
    assert runnable("tensorboard") == str(tmp_path / "venv" / "bin" / "tensorboard")


def test_submit_passes_its_own_bin_folder_to_the_job(monkeypatch):
    import sys

    from caviar.ops import cluster

    sent = {}

    class Jobs:
        def submit_job(self, entrypoint, runtime_env):
            sent.update(runtime_env)
            return "raysubmit_x"

    monkeypatch.setattr(cluster, "client", lambda address: Jobs())
    monkeypatch.chdir(ROOT)
    assert cluster.submit(QUICKSTART, "http://127.0.0.1:1", [], install=False) == "raysubmit_x"
    assert sent["env_vars"]["CAVIAR_CLIENT_BIN"] == str(Path(sys.executable).parent)


def test_serve_on_a_busy_port_is_one_line_before_any_serving_line(cli, experiment):
    """48.5: it announced `serving ...` and then failed with Errno 98."""
    checkpoint = next(experiment.glob("*/checkpoint_*"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = cli("serve", "--model", checkpoint, "--port", port)
    assert proc.returncode == 2 and "serving" not in proc.stderr and "Traceback" not in proc.stderr
    assert (
        proc.stderr.strip()
        == f"caviar: error: port {port} on 127.0.0.1 is in use by another program; choose another with --port"
    )


def test_predict_reads_ten_thousand_reviews_from_a_file_in_one_call(cli, experiment, registry_dir, tmp_path):
    """48.11: --file with --format tsv; blank lines are passed over and said."""
    promote(experiment, "nsmc")
    reviews = [f"배우들 연기가 좋았다 {i}" if i % 2 else f"돈 아까운 영화 {i}" for i in range(10_000)]
    (tmp_path / "reviews.txt").write_text("\n".join(reviews[:5000]) + "\n\n" + "\n".join(reviews[5000:]) + "\n")
    proc = cli("predict", "--file", tmp_path / "reviews.txt", "--format", "tsv", "--name", "nsmc")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "label\tconfidence\tpositive_probability\ttext" and len(lines) == 10_001
    rows = [line.split("\t") for line in lines[1:]]
    assert [r[3] for r in rows] == reviews and all(r[0] in ("긍정", "부정") and 0.5 <= float(r[1]) <= 1 for r in rows)
    assert "passed over 1 blank line" in proc.stderr


def test_predict_reads_standard_input_as_json_lines(cli, experiment, registry_dir, monkeypatch):
    import io
    import sys

    promote(experiment, "nsmc")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("좋아요\n최악이에요\n".encode())))
    proc = cli("predict", "--file", "-", "--format", "jsonl", "--name", "nsmc")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["text"] for r in rows] == ["좋아요", "최악이에요"] and all(r["label"] in ("긍정", "부정") for r in rows)


@pytest.mark.parametrize(
    ("content", "extra", "message"),
    [
        (b"good\n\x00\x01\n", [], "line 2: text must not be empty"),
        (b"\xff\xfe bad", [], "not UTF-8 (byte 0xff on line 1)"),
        (b"\n \n", [], "no reviews (every line is blank)"),
        (b"fine\n", ["also an argument"], "not both"),
        (b"fine\n", ["--format", "csv"], "--format 'csv': use one of text, tsv, jsonl"),
    ],
)
def test_predict_file_mistakes_are_one_line_before_any_answer(cli, experiment, tmp_path, content, extra, message):
    checkpoint = next(experiment.glob("*/checkpoint_*"))
    (tmp_path / "in.txt").write_bytes(content)
    args = [a for a in extra if not a.startswith("also")] + [a for a in extra if a.startswith("also")]
    proc = cli("predict", *args, "--file", tmp_path / "in.txt", "--model", checkpoint)
    assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr, proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_no_reviews_at_all_is_one_line(cli):
    proc = cli("predict")
    assert proc.returncode == 2 and "no reviews" in proc.stderr


def test_user_error_is_what_load_job_raises_for_a_missing_job():
    with pytest.raises(UserError, match="did you mean"):
        load_job(ROOT / "tune_jobs" / "nsmc_ash.yaml")


def test_predict_refuses_a_model_with_nan_weights_as_serve_does(cli, experiment, registry_dir):
    """Issue 47, item 3: NaN weights re-signed into the card (the checksums pass) gave
    `부정  nan% sure  좋아요` and exit 0; predict now checks the model as serve does, in one line."""
    import torch
    from safetensors.torch import load_file, save_file

    from caviar.registry import store

    promote(experiment, "nsmc")
    version = registry_dir / "nsmc" / "v1"
    weights = load_file(version / "model.safetensors")
    save_file(
        {k: torch.full_like(v, float("nan")) for k, v in weights.items()},
        version / "model.safetensors",
        metadata={"format": "pt"},
    )
    card = json.loads((version / store.CARD).read_text())
    card["files"]["model.safetensors"] = store.sha256(version / "model.safetensors")
    (version / store.CARD).write_text(json.dumps(card))
    proc = cli("predict", "좋아요", "--name", "nsmc")
    assert proc.returncode == 2 and "nan" not in proc.stdout.lower(), proc.stdout
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("caviar: error:") and "not a probability" in line and "Traceback" not in proc.stderr


def test_seed_reruns_are_bounded(cli, tmp_path):
    """Issue 47, item 8: `caviar reseed --seeds 100000000` grew to 6 GB before a cap killed it; the
    counts are bounded before anything is read, on the command line and in a job file alike."""
    from tests.conftest import tiny_job_yaml

    seeds = cli("reseed", tmp_path, "--seeds", "100000000")
    assert seeds.returncode == 2 and "less than or equal to 64" in seeds.stderr
    top = cli("reseed", tmp_path, "--top-k", "99999999")
    assert top.returncode == 2 and "--top-k 99999999: at most 32 configurations" in top.stderr
    job = tiny_job_yaml(tmp_path / "job.yaml", final={"seeds": 100_000_000})
    with pytest.raises(UserError, match=r"final.seeds.*less than or equal to 64"):
        load_job(job)
