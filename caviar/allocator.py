"""Run caviar's processes on jemalloc where it is installed: on glibc's malloc a long run keeps growing.

Every training step allocates tensors of new sizes (batch widths and masked-row counts vary), and
glibc's malloc keeps the freed pieces in ever more fragmented heaps: over 1,500 pretraining steps
the process grew from 0.5 to 4.8 GiB and each 250 steps took 46 s at first, 58-59 s by the end.
jemalloc reuses the pieces. It must still hand back pages it has not touched for a while: with
purging off entirely, 4-layer stage 0 held flat (for 700 steps in one run, 2,000 in another) and
then grew without end, and in a full route it filled the machine's 24 GiB within 17 minutes. So a
background thread returns pages idle for 10 s, and large blocks stay in the ordinary arenas,
where that applies, not in jemalloc's own arena for them, which purges each block as it is freed
(bench/allocator.py: 1.3-1.7 GiB against glibc's 6.8 over 3,000 steps, at about glibc's speed).
The allocator is fixed when a process starts, so the CLI re-executes itself once with jemalloc
preloaded; Ray's daemons and trial workers inherit that.

CAVIAR_ALLOCATOR=system keeps glibc (as does an allocator the user already preloads);
CAVIAR_JEMALLOC=/path/libjemalloc.so.2 names a library elsewhere. Install jemalloc with
`apt install libjemalloc2` (Debian/Ubuntu) or `dnf install jemalloc`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from model.errors import UserError

# pages idle for 10 s go back to the OS from a background thread (never in a training step's path);
# oversize_threshold:0 keeps large blocks out of the arena that purges each one as it is freed
MALLOC_CONF = "background_thread:true,dirty_decay_ms:10000,muzzy_decay_ms:0,oversize_threshold:0"
CHOICES = ("jemalloc", "system")
SEARCHED = (
    "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
    "/lib/x86_64-linux-gnu/libjemalloc.so.2",
    "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2",
    "/usr/lib64/libjemalloc.so.2",
    "/usr/lib/libjemalloc.so.2",
    "/usr/local/lib/libjemalloc.so.2",
)


def find_jemalloc(environ=os.environ) -> str | None:
    named = environ.get("CAVIAR_JEMALLOC")
    if named:
        if not Path(named).is_file():
            raise UserError(f"CAVIAR_JEMALLOC={named}: no such file")
        return named
    return next((path for path in SEARCHED if Path(path).is_file()), None)


def jemalloc_env(environ=os.environ) -> dict[str, str] | None:
    """The environment a process needs to start on jemalloc, or None where it is off, missing, already
    preloaded (so a restarted process never restarts again), or another allocator is preloaded."""
    choice = environ.get("CAVIAR_ALLOCATOR", "jemalloc")
    if choice not in CHOICES:
        raise UserError(f"CAVIAR_ALLOCATOR={choice}: use one of {', '.join(CHOICES)}")
    if choice == "system" or sys.platform != "linux":
        return None
    library = find_jemalloc(environ)
    preloaded = environ.get("LD_PRELOAD", "").split()
    if library is None or library in preloaded or any("malloc" in Path(p).name for p in preloaded):
        return None
    return {
        **environ,
        "LD_PRELOAD": " ".join([*preloaded, library]),
        "MALLOC_CONF": environ.get("MALLOC_CONF") or MALLOC_CONF,
    }


def restart_on_jemalloc() -> None:
    """Re-execute this process with jemalloc preloaded, where `jemalloc_env` says so; returns
    otherwise. sys.orig_argv replays `caviar ...`, `python -m caviar ...` and `python -c ...` alike."""
    env = jemalloc_env()
    if env is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def loaded_allocator() -> str:
    """'jemalloc' when this process runs on it, else 'system'; benchmark records say which."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "system"
    return "jemalloc" if "libjemalloc" in maps else "system"
