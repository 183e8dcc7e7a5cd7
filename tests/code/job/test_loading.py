"""Job-file hardening: hostile YAML and --set values end in one line and exit 2, never a traceback,
within a time and memory bound (issue 9.15-9.20), plus a fuzz test of the loader."""

from __future__ import annotations

import json
import resource
import string
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caviar.job.loading import load_job
from caviar.job.schema import JobSpec
from model.errors import UserError
from tests.conftest import TINY, tiny_job_yaml


def alias_bomb(levels: int = 9, fanout: int = 10) -> str:
    lines = ["a0: &a0 [x]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * fanout)}]")
    return "\n".join(lines)


def one_error_line(proc) -> str:
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("caviar: error:")]
    assert len(errors) == 1, proc.stderr[-2000:]
    return errors[0]


@pytest.mark.parametrize("field", ["name", "train.betas"])
def test_an_alias_bomb_is_refused_quickly_and_briefly(cli, tmp_path, field):
    """Issue 9.15: a 10^8-leaf bomb referenced from a typed field; the message stays short."""
    section, _, leaf = field.rpartition(".")
    use = f"{section}:\n  {leaf}: *a8" if section else f"{leaf}: *a8"
    job = tmp_path / "bomb.yaml"
    job.write_text(alias_bomb() + "\n" + use + "\n")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with pytest.raises(UserError, match="YAML aliases are expanded"):
        load_job(job)
    assert time.perf_counter() - started < 5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB: no expansion in memory
    line = one_error_line(cli("train", job))
    assert "YAML aliases are expanded" in line and len(line) < 400


def test_a_bomb_in_set_is_refused_too(cli, tmp_path):
    job = tiny_job_yaml(tmp_path / "job.yaml")
    bomb = "[" + ", ".join(["[" + ", ".join(["x"] * 400) + "]"] * 400) + "]"  # 160,000 values
    line = one_error_line(cli("train", job, "--set", f"train.betas={bomb}"))
    assert len(line) < 400


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("a: " + "[" * 2000 + "]" * 2000, "nested too deeply"),
        (b"name: caf\xe9\n", "not UTF-8 (byte 0xe9 on line 1)"),
        ("x" * (1 << 20) + "\n", "a job file is at most"),
        ("- just\n- a list\n", "the top level must be a mapping"),
    ],
    ids=["deep", "latin-1", "huge", "list"],
)
def test_malformed_files_are_one_line(cli, tmp_path, content, message):
    """Issue 9.16."""
    job = tmp_path / "job.yaml"
    job.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert message in one_error_line(cli("train", job))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.limit=2", "the train split holds 0 부정, 0 긍정"),  # issue 9.16: was an IndexError
        ("name=" + "n" * 300, "name: use 1 to 100 of"),  # issue 9.16: was OSError after training
        ("name=..", "name: use 1 to 100 of"),  # issue 9.18
        ("train.lr=inf", "train.lr: Input should be a finite number"),  # issue 9.17
        ("train.lr=.inf", "train.lr: Input should be a finite number"),
        ("train.lr=1e309", "train.lr: Input should be a finite number"),
        ("train.betas=[0.9, .nan]", "Input should be a finite number"),
        ("num_sample=3", "num_sample: unknown key; did you mean num_samples?"),  # issue 9.19
        ("train.weight_decy=0.1", "train.weight_decy: unknown key; did you mean weight_decay?"),
        ("search_space.train.lrr={uniform: [0, 1]}", "unknown key (did you mean train.lr?)"),
    ],
)
def test_bad_overrides_are_one_line(cli, tmp_path, monkeypatch, override, message):
    monkeypatch.chdir(tmp_path)
    job = tiny_job_yaml(tmp_path / "job.yaml")
    line = one_error_line(cli("train", job, "--set", override))
    assert message in line and len(line) < 400, line
    written = [
        p for p in (tmp_path / "results").rglob("*") if p.is_file() or (p.is_dir() and p.name.startswith("tiny"))
    ]
    assert not written, "nothing may be left behind by a job that could not start"


def test_a_run_folder_that_cannot_be_made_fails_before_training(cli, tmp_path):
    job = tiny_job_yaml(tmp_path / "job.yaml")
    (tmp_path / "file").write_text("not a folder")
    started = time.perf_counter()
    line = one_error_line(cli("train", job, "--out", tmp_path / "file" / "run"))
    assert "cannot create the run folder" in line and time.perf_counter() - started < 5


def test_set_overrides_a_search_space_entry(tmp_path):
    """Issue 9.20: the dotted key inside search_space is one key, not a path."""
    job = tiny_job_yaml(tmp_path / "job.yaml", search_space={"train.lr": {"loguniform": [1e-4, 1e-3]}})
    spec = load_job(
        job, ["search_space.train.lr={loguniform: [3.0e-4, 3.0e-3]}", "search_space.model.layers={choice: [1, 2]}"]
    )
    assert spec.search_space["train.lr"].loguniform == (3e-4, 3e-3)
    assert spec.search_space["model.layers"].choice == [1, 2]


KEYS = st.sampled_from(
    [
        "name",
        "num_samples",
        "train.lr",
        "train.betas",
        "model.layers",
        "data.limit",
        "search_space.train.lr",
        "scheduler.type",
        "scheduler.max_t",
        "search",
        "x",
        "train",
        "a.b.c",
        "",
    ]
)
YAML_TEXT = st.text(alphabet=string.printable + "가나다&*!|>-[]{}:,#'\"\\\u200b", max_size=80)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=YAML_TEXT)
def test_fuzz_job_files(tmp_path, text):
    """Random YAML gives a job or a UserError (exit 2), nothing else, quickly."""
    job = tmp_path / "fuzz.yaml"
    job.write_text(text, encoding="utf-8", errors="surrogatepass")
    started = time.perf_counter()
    try:
        assert isinstance(load_job(job), JobSpec)
    except UserError as err:
        assert len(str(err)) < 600
    assert time.perf_counter() - started < 2


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=KEYS, value=YAML_TEXT)
def test_fuzz_set_values(tmp_path, key, value):
    job = tiny_job_yaml(tmp_path / "job.yaml")
    started = time.perf_counter()
    try:
        assert isinstance(load_job(job, [f"{key}={value}"]), JobSpec)
    except UserError as err:
        assert len(str(err)) < 600
    assert time.perf_counter() - started < 2


def test_a_job_survives_its_own_record():
    """caviar_job.json is a dump of the job: read back, it is the same job, for the defaults, the
    tiny fixture job and every shipped job (with their YAML shorthands turned into stages)."""
    jobs = [JobSpec(), JobSpec.model_validate(yaml.safe_load(yaml.safe_dump(TINY)))]
    jobs += [load_job(path) for path in sorted((Path(__file__).parents[3] / "tune_jobs").glob("*.yaml"))]
    for job in jobs:
        again = JobSpec.model_validate(json.loads(json.dumps(job.model_dump(mode="json"))))
        assert again == job, job.name
    assert jobs[1].model.hidden == TINY["model"]["hidden"] and jobs[1].train.lr == TINY["train"]["lr"]
    assert any(j.stages.pretrain for j in jobs)  # nsmc_pretrained's {from_pretrain: true}


def test_a_set_error_names_only_the_key_at_fault(tmp_path):
    job = tiny_job_yaml(tmp_path / "job.yaml")
    with pytest.raises(UserError) as err:
        load_job(job, ["train.lr=3e-4", "train.batch_size=0", "model.layers=2"])
    assert str(err.value).startswith("--set train.batch_size=0: train.batch_size:")
    bad_file = tmp_path / "bad.yaml"
    bad_file.write_text("train:\n  lrr: 1\n", encoding="utf-8")
    with pytest.raises(UserError) as err:
        load_job(bad_file, ["train.lr=3e-4"])
    assert str(err.value).startswith(f"{bad_file}: train.lrr: unknown key")


def test_what_caviar_resolves_is_not_a_key_a_user_writes(cli, tmp_path):
    """Issue 50, item 4: the data's fingerprints and stage 0's folders live in the resolved record
    (caviar_job.json), not in the schema a user writes: docs/jobs.md leaves them out, a job file or
    a --set naming one is refused in one line, and caviar's own record used as a job file resolves
    them again."""
    from caviar.job.reference import job_reference
    from caviar.job.resolved_keys import resolved_keys

    keys = resolved_keys(JobSpec)
    assert set(keys) == {
        "data.fingerprint",
        "data.train_fingerprint",
        "data.split",
        "stages.pretrained_by",
        "stages.pretrained",
        "stages.lr_range",
        "stages.fuse_chosen",
    }
    reference = job_reference()
    assert not [k for k in keys if f"`{k}`" in reference] and "`data.seed`" in reference

    written = tiny_job_yaml(tmp_path / "job.yaml", data={**TINY["data"], "fingerprint": "abc"})
    proc = cli("train", written)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "data.fingerprint is set by caviar when the job runs" in proc.stderr and str(written) in proc.stderr
    plain = tiny_job_yaml(tmp_path / "plain.yaml")
    with pytest.raises(UserError, match=r"--set stages.pretrained_by=\{a: b\}: stages.pretrained_by is set by caviar"):
        load_job(plain, ["stages.pretrained_by={a: b}"])

    record = tmp_path / "caviar_job.json"  # as an experiment records it, the resolved values in
    record.write_text(
        json.dumps(
            JobSpec.model_validate({**TINY, "data": {**TINY["data"], "fingerprint": "abc"}}).model_dump(mode="json")
        )
    )
    again = load_job(record)
    assert again.data.fingerprint is None and again.data.seed == JobSpec.model_validate(TINY).data.seed


def test_a_record_used_as_a_job_hands_each_stage_output_back_to_its_stage(tmp_path):
    """Issue 50, item 4: the LR range, stage 0's folder and the pilot's K are named in the resolved
    record; a record given back as a job file is the job its user wrote (the shorthands), so each
    stage runs again instead of its output passing for a value the user chose."""
    written = JobSpec.model_validate(
        {
            **TINY,
            "train": {**TINY["train"], "lr": {"from_lr_find": True}},
            "model": {**TINY["model"], "pretrained": {"from_pretrain": True}},
            "search_space": {"train.weight_decay": {"choice": [0.0, 0.01]}},
        }
    )
    assert written.stages.lr_find and written.stages.pretrain
    resolved = written.with_pretrained("/pretrained/run-1").with_lr_range(1e-4, 3e-3)
    assert resolved.search_space["train.lr"].model_dump(exclude_none=True)["loguniform"] == (1e-4, 3e-3)
    assert resolved.model.pretrained == "/pretrained/run-1" and resolved.train.lr == 3e-3
    assert (resolved.stages.lr_range, resolved.stages.pretrained) == ((1e-4, 3e-3), "/pretrained/run-1")
    assert not resolved.stages.lr_find and not resolved.stages.pretrain  # the stages have run
    fused = JobSpec.model_validate({**TINY, "fuse": "auto"}).with_fuse_chosen(4)
    assert fused.fuse == "auto" and fused.members_per_trial == 4 and fused.stages.fuse_chosen == 4

    for job in (resolved, fused):
        record = tmp_path / "caviar_job.json"
        record.write_text(json.dumps(job.model_dump(mode="json")))
        assert JobSpec.model_validate(json.loads(record.read_text())) == job  # resume reads it as it ran
    record.write_text(json.dumps(resolved.model_dump(mode="json")))
    again = load_job(record)
    assert again.stages.lr_find and again.stages.pretrain and again.model.pretrained is None
    assert "train.lr" not in again.search_space and "train.weight_decay" in again.search_space
    assert (again.stages.lr_range, again.stages.pretrained) == (None, None)
    record.write_text(json.dumps(fused.model_dump(mode="json")))
    assert load_job(record).members_per_trial == "auto"  # the pilot runs again


@pytest.mark.parametrize(("written", "meant"), [("on", "on"), ("off", "off"), ("auto", "auto")])
def test_compile_takes_the_documented_values_as_yaml_reads_them(tmp_path, written, meant):
    """Issue 47: YAML reads `on` and `off` as booleans; `compile: off` in a file and
    `--set train.compile=on` said "Input should be 'auto', 'on' or 'off' (got True)"."""
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(TINY).replace("train:\n", f"train:\n  compile: {written}\n", 1))
    assert load_job(job).train.compile == meant
    assert load_job(tiny_job_yaml(tmp_path / "plain.yaml"), [f"train.compile={written}"]).train.compile == meant


@pytest.mark.parametrize("cache", ["/dev/null", "/proc/caviar-nope"])
def test_a_cache_that_is_no_writable_folder_is_one_line(cli, tmp_path, monkeypatch, cache):
    """Issue 47: CAVIAR_CACHE=/dev/null or /proc/x with train was a NotADirectoryError or a
    FileNotFoundError traceback."""
    monkeypatch.setenv("CAVIAR_CACHE", cache)
    proc = cli("train", tiny_job_yaml(tmp_path / "job.yaml"), "--out", tmp_path / "run")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"caviar: error: CAVIAR_CACHE={cache}:") and "folder" in line, line


@pytest.mark.parametrize("where", ["/proc/caviar-nope", "/dev/null/inside"])
def test_a_storage_that_cannot_be_made_is_not_called_a_full_disk(cli, tmp_path, where):
    """Issue 47: storage=/proc/nope said `no space left on /proc/nope/...: 0 MB free`."""
    proc = cli("tune", tiny_job_yaml(tmp_path / "job.yaml"), "--set", f"storage={where}", "--name", "x")
    assert proc.returncode == 2 and "no space left" not in proc.stderr, proc.stderr
    assert (
        proc.stderr.strip().splitlines()[-1].startswith(f"caviar: error: {where}/x: cannot create the run folder (")
    ), proc.stderr
