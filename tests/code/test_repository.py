"""The repository itself: no stray logs tracked, and no machine's absolute paths in benchmark JSON."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.conftest import leaves

ROOT = Path(__file__).parents[2]


def test_no_logs_are_tracked():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert not [name for name in tracked.splitlines() if name.endswith(".log")]


def test_benchmark_json_records_paths_relative_to_the_project():
    for path in sorted((ROOT / "bench" / "results").glob("*.json")):
        absolute = [s for s in leaves(json.loads(path.read_text())) if isinstance(s, str) and s.startswith(("/", "~"))]
        assert not absolute, (path.name, absolute[:3])
