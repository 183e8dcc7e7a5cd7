"""The Ray processes this pytest worker started, for the leak checks.

Each worker puts its own tag in its environment (tests/conftest.py), and every raylet and GCS
server it starts, in process or through `caviar` or `ray start` in a subprocess, inherits it. A
leak check that counts only its own tag cannot mistake another worker's Ray for a leak, so tests
that start Ray run on both workers at once.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

TAG = "CAVIAR_TEST_RAY_TAG"
NAMES = ("raylet", "gcs_server")


def tag_of(pid: int) -> str | None:
    """The process's tag, or None if it has none or is gone (or is not ours to read)."""
    with contextlib.suppress(OSError):
        for entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
            if entry.startswith(TAG.encode() + b"="):
                return entry.split(b"=", 1)[1].decode(errors="replace")
    return None


def ray_processes(tag: str | None = None) -> set[int]:
    """Live raylets and GCS servers that carry `tag` (by default this worker's), by process name
    (exited ones waiting to be reaped do not count; matching whole command lines also caught
    starting Python workers whose arguments mention a raylet)."""
    tag = tag or os.environ[TAG]
    out = "".join(subprocess.run(["pgrep", "-x", name], capture_output=True, text=True).stdout for name in NAMES)
    alive = set()
    for pid in map(int, out.split()):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z" and tag_of(pid) == tag:
                alive.add(pid)
    return alive
