"""Every benchmark that a change can break without a test noticing runs here in its smoke form, as
Ray Tune's examples run with --smoke-test: `bench.gpu --device cpu --smoke`, the first command a
session with a GPU runs, was broken for a round before anyone saw (issue 50, item 10)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from model.data import has_nsmc
from tests.conftest import REAL_NSMC

pytestmark = pytest.mark.slow
PROJECT = Path(__file__).parents[3]


def smoke(tmp_path: Path, module: str, *args: str) -> dict:
    """`python -m bench.<module> ... --smoke` from a folder of its own (its JSON goes to
    <there>/results/bench), with its own Ray, as a user runs it; returns the figures it wrote."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env |= {"CAVIAR_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(PROJECT), "NSMC_DIR": str(REAL_NSMC)}
    command = [sys.executable, "-m", f"bench.{module}", *args, "--smoke"]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((tmp_path / "results" / "bench" / f"{module}_smoke.json").read_text())


@pytest.mark.skipif(not has_nsmc(REAL_NSMC), reason="bench.gpu reads NSMC itself; this workspace has none")
def test_the_gpu_benchmark_runs_on_cpu(tmp_path):
    figures = smoke(tmp_path, "gpu", "--device", "cpu")
    assert figures["packing"] and all(p["errored"] == 0 and p["trials"] == 2 for p in figures["packing"])


def test_the_storage_benchmark_runs(tmp_path):
    figures = smoke(tmp_path, "storage")
    assert figures["trials"] == 2 and figures["met"]["store_bytes_over_bound"]
    assert figures["report_s_empty_cache"] > 0 and figures["promote_s_empty_cache"] > 0


def test_the_train_one_benchmark_runs(tmp_path):
    figures = smoke(tmp_path, "train_one")
    assert figures["smoke"] and figures["steps"] > 0 and figures["plain_loop_steps"] > 0
    assert 0 <= figures["test_accuracy"] <= 1 and figures["throughput_ratio"] > 0


def test_the_stack_of_one_benchmark_runs_and_its_two_steps_agree(tmp_path):
    """A configuration trained by the plain step and as a fused stack of one ends with the same loss."""
    figures = smoke(tmp_path, "stack_of_one")
    assert set(figures["models"]) == {"tiny", "default"}
    for model in figures["models"].values():
        assert model["steps"] > 0 and model["plain_ms_per_step"] > 0 and model["stacked_over_plain"] > 0
        assert model["first_loss"]["plain"] != model["last_loss"]["plain"] and model["last_loss_gap"] < 1e-4
