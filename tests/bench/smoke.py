"""How the suite runs a benchmark: `python -m bench.<module> ... --smoke` from a folder of its own
(its JSON goes to <there>/results/bench), with its own Ray, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REAL_NSMC

PROJECT = Path(__file__).parents[2]


def smoke(tmp_path: Path, module: str, *args: str, result: str | None = None) -> dict:
    """Runs the benchmark's smoke form; returns the figures it wrote (`result`: the JSON's name, when
    it is not the module's)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env |= {"CAVIAR_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(PROJECT), "NSMC_DIR": str(REAL_NSMC)}
    env.setdefault("CAVIAR_COMPILE_BACKEND", "aot_eager")  # compile traced, no code generated: as test_train
    command = [sys.executable, "-m", f"bench.{module}", *args, "--smoke"]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((tmp_path / "results" / "bench" / f"{result or module}_smoke.json").read_text())
