"""Issue 50, item 11: compilation survives a damaged inductor cache. A process killed mid-compile
once left a 0-byte kernel in torch's shared cache, and every later compile of that kernel failed
for good. caviar compiles into a cache of its own (<CAVIAR_CACHE>/inductor), and a compile that
fails falls back to eager with one warning line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

STEP = """
import json, logging, torch
logging.basicConfig(level=logging.WARNING, format="%(message)s")
from model.device import maybe_compile
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
x = torch.randn(4, 8)
step = maybe_compile(net, "on", torch.device("cpu"))
print(json.dumps({"out": step(x).tolist(), "eager": net(x).tolist()}))
"""


def run_step(cache: Path) -> subprocess.CompletedProcess:
    """One compiled call in a fresh process (nothing compiled in memory), inductor generating code."""
    env = {k: v for k, v in os.environ.items() if k not in ("TORCHINDUCTOR_CACHE_DIR", "CAVIAR_COMPILE_BACKEND")}
    env["CAVIAR_CACHE"] = str(cache)
    return subprocess.run([sys.executable, "-c", STEP], env=env, capture_output=True, text=True, timeout=300)


def test_a_zero_byte_cached_kernel_falls_back_to_eager_with_one_warning(tmp_path):
    first = run_step(tmp_path / "cache")
    assert first.returncode == 0 and "compiling failed" not in first.stderr, first.stderr[-2000:]
    kernels = list((tmp_path / "cache" / "inductor").rglob("*.so"))
    assert kernels, "the compile did not use caviar's own cache"
    for kernel in kernels:  # what a process killed mid-write leaves
        kernel.write_bytes(b"")

    second = run_step(tmp_path / "cache")
    assert second.returncode == 0, second.stderr[-2000:]
    warned = [line for line in second.stderr.splitlines() if "compiling failed" in line]
    assert len(warned) == 1 and "this run goes on eagerly" in warned[0], second.stderr[-2000:]
    result = json.loads(second.stdout.strip().splitlines()[-1])
    assert result["out"] == result["eager"]
