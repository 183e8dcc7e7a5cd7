"""Shared by the benchmark scripts: machine facts, peak memory, and writing bench/results/<name>.json."""

from __future__ import annotations

import json
import os
import platform
import resource
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def peak_rss_gb() -> float:
    """Peak resident memory of this process (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def machine() -> dict:
    return {
        "cpus": len(os.sched_getaffinity(0)),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_result(name: str, figures: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"machine": machine(), **figures}, indent=2, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)
    print(json.dumps(figures, indent=2, ensure_ascii=False))
    print(f"wrote {path}")
    return path
