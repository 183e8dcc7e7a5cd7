"""Values that once passed silently or aborted the process (hardening, round two, items 3, 4, 6, 8):
each is now one line naming the key, before anything is built or read."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from caviar.job.loading import load_job
from model.config import ModelConfig
from model.errors import UserError
from model.network import check_fits, parameter_count, scratch_config
from tests.conftest import tiny_job_yaml


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("train.batch_size=true", "train.batch_size: expected a number, got true/false"),
        ("num_samples=true", "num_samples: expected a number, got true/false"),
        ("train.lr=false", "train.lr: expected a number, got true/false"),
        ("model.freeze_base=1", "model.freeze_base: expected true or false"),
        ('model.freeze_base="true"', "model.freeze_base: expected true or false"),  # a string, quoted
        ("model.vocab_size=10000000000", "model.vocab_size: Input should be less than or equal to 1000000"),
        ("model.layers=1000000", "model.layers: Input should be less than or equal to 64"),
    ],
)
def test_a_boolean_is_no_number_and_the_shape_is_bounded(tmp_path, assignment, message):
    job = tiny_job_yaml(tmp_path / "job.yaml")
    with pytest.raises(UserError, match=message):
        load_job(job, [assignment])


def test_a_model_that_cannot_fit_is_refused_before_it_is_built():
    huge = ModelConfig(layers=64, hidden=8192, heads=64, intermediate=65536, vocab_size=1_000_000)
    with pytest.raises(UserError, match=r"model: [\d,]+M parameters need [\d,.]+ GiB to train .* GiB are free"):
        check_fits(huge)
    check_fits(ModelConfig())  # the default fits anywhere


@pytest.mark.parametrize("shape", [{}, {"layers": 3, "hidden": 96, "heads": 4, "intermediate": 200, "max_len": 40}])
def test_the_parameter_estimate_is_the_built_models_count(shape):
    from model.network import from_config

    cfg = ModelConfig(**shape)
    net = from_config(scratch_config(cfg, cfg.vocab_size, 0), cfg)
    assert parameter_count(cfg) == sum(p.numel() for p in net.parameters())


def run_train(job, *sets):
    args = [a for s in sets for a in ("--set", s)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # the hub id below must fail fast, not wait on a network
    return subprocess.run(
        [sys.executable, "-m", "caviar", "train", str(job), *args], capture_output=True, text=True, timeout=120, env=env
    )


@pytest.mark.parametrize(
    ("pretrained", "message"),
    [
        ("{tmp}/missing", "expected a model folder holding config.json (no such folder)"),
        ("{tmp}/empty", "expected a model folder holding config.json (it has none)"),
        ("nobody/no-such-model", "not a local model folder, and the hub says"),
    ],
)
def test_a_pretrained_model_that_is_not_there_is_one_line(tmp_path, pretrained, message):
    (tmp_path / "empty").mkdir()
    job = tiny_job_yaml(tmp_path / "job.yaml")
    proc = run_train(job, f"model.pretrained={pretrained.format(tmp=tmp_path)}")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert lines[-1].startswith("caviar: error: model.pretrained=") and message in lines[-1]


def test_a_job_path_that_cannot_be_read_is_one_line():
    proc = subprocess.run(
        [sys.executable, "-m", "caviar", "tune", "/proc/self/mem"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("caviar: error: /proc/self/mem: cannot read it as a job file")
