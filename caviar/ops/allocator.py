"""Run caviar's processes on jemalloc where it is installed: on glibc's malloc a long run keeps growing.

Every training step allocates tensors of new sizes (batch widths and masked-row counts vary), and
glibc's malloc keeps the freed pieces in ever more fragmented heaps: over 1,500 pretraining steps
the process grew from 0.5 to 4.8 GiB and each 250 steps took 46 s at first, 58-59 s by the end.
jemalloc reuses the pieces. It must still hand back pages it has not touched for a while: with
purging off entirely, 4-layer stage 0 held flat (for 700 steps in one run, 2,000 in another) and
then grew without end, and in a full route it filled the machine's 24 GiB within 17 minutes.

How it hands them back decides the speed. jemalloc's own decay (a background thread returning pages
idle for 10 s, the MALLOC_CONF below) returns a few pages all the time, and a training step faults
them back in: 4-layer stage 0 ran at 0.85-0.89x glibc's speed with it, 1.17x with purging off, and
1.18-1.19x with all idle pages returned at once every ~11 s. So every process that trains
(`purge_on_a_timer`) turns decay off in its own arenas and returns all idle pages at once every 10
s: as fast as purging off, and as small as decay. Every other process (Ray's daemons, idle workers)
keeps the decay. Large blocks stay in the ordinary arenas (oversize_threshold:0), not in jemalloc's
own arena for them, which purges each block as it is freed. bench/allocator.py measures all of this.

The allocator is fixed when a process starts, so an entry point (`run_on_jemalloc`: the CLI,
bench.quality) re-executes itself once with jemalloc preloaded; Ray's daemons and trial workers
inherit that, and each trial worker starts its own timer.

CAVIAR_ALLOCATOR=system keeps glibc (as does an allocator the user already preloads);
CAVIAR_JEMALLOC=/path/libjemalloc.so.2 names a library elsewhere. Install jemalloc with
`apt install libjemalloc2` (Debian/Ubuntu) or `dnf install jemalloc`.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import time
from pathlib import Path

from model.errors import UserError
from model.settings import Settings

# every process: pages idle for 10 s go back to the OS from a background thread; oversize_threshold:0
# keeps large blocks out of the arena that purges each one as it is freed
MALLOC_CONF = "background_thread:true,dirty_decay_ms:10000,muzzy_decay_ms:0,oversize_threshold:0"
PURGE_EVERY_S = 10.0  # a process that trains returns all its idle pages at once this often
PURGE_ALL_ARENAS = b"arena.4096.purge"  # 4096: jemalloc's MALLCTL_ARENAS_ALL
CHOICES = ("jemalloc", "system")
SEARCHED = (
    "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
    "/lib/x86_64-linux-gnu/libjemalloc.so.2",
    "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2",
    "/usr/lib64/libjemalloc.so.2",
    "/usr/lib/libjemalloc.so.2",
    "/usr/local/lib/libjemalloc.so.2",
)


def find_jemalloc(environ=None) -> str | None:
    named = Settings.from_env(environ).jemalloc
    if named:
        if not Path(named).is_file():
            raise UserError(f"CAVIAR_JEMALLOC={named}: no such file")
        return named
    return next((path for path in SEARCHED if Path(path).is_file()), None)


def jemalloc_env(environ=None) -> dict[str, str] | None:
    """The environment a process needs to start on jemalloc, or None where it is off, missing, already
    preloaded (so a restarted process never restarts again), or another allocator is preloaded."""
    environ = os.environ if environ is None else environ
    if not _chosen(environ):
        return None
    library = find_jemalloc(environ)
    preloaded = environ.get("LD_PRELOAD", "").split()
    if library is None or library in preloaded or _malloc_preloaded(preloaded):
        return None
    return {
        **environ,
        "LD_PRELOAD": " ".join([*preloaded, library]),
        "MALLOC_CONF": environ.get("MALLOC_CONF") or MALLOC_CONF,
    }


MISSING_NOTE = (
    "caviar: note: jemalloc is not installed, so this run used glibc's malloc, which grows over a long run "
    "and trained 7-11% slower (apt install libjemalloc2; CAVIAR_ALLOCATOR=system hides this note)"
)


def missing_jemalloc_note(environ=None) -> str | None:
    """The line a training command ends with where jemalloc was wanted but not found, else None: a
    slower, growing run should say why. At the end, not the start: a job with a mistake in it gets
    its one-line error alone."""
    environ = os.environ if environ is None else environ
    if not _chosen(environ) or _malloc_preloaded(environ.get("LD_PRELOAD", "").split()):
        return None
    return MISSING_NOTE if find_jemalloc(environ) is None else None


def _chosen(environ) -> bool:
    """Whether the settings ask for jemalloc on a system that can preload it; a wrong choice is an error."""
    choice = Settings.from_env(environ).allocator
    if choice not in CHOICES:
        raise UserError(f"CAVIAR_ALLOCATOR={choice}: use one of {', '.join(CHOICES)}")
    return choice == "jemalloc" and sys.platform == "linux"


def _malloc_preloaded(preloaded: list[str]) -> bool:
    """jemalloc or the user's own allocator is preloaded already."""
    return any("malloc" in Path(p).name for p in preloaded)


def restart_on_jemalloc() -> None:
    """Re-execute this process with jemalloc preloaded, where `jemalloc_env` says so; returns
    otherwise. sys.orig_argv replays `caviar ...`, `python -m caviar ...` and `python -c ...` alike."""
    env = jemalloc_env()
    if env is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def run_on_jemalloc() -> None:
    """Start a process that trains as caviar runs it: re-executed onto jemalloc where installed, then
    returning its idle pages on a timer. The one call an entry point makes; the two steps are below."""
    restart_on_jemalloc()
    purge_on_a_timer()


def loaded_allocator() -> str:
    """'jemalloc' when this process runs on it, else 'system'; benchmark records say which."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "system"
    return "jemalloc" if "libjemalloc" in maps else "system"


_purger: threading.Thread | None = None


def purge_on_a_timer(every_s: float = PURGE_EVERY_S) -> threading.Thread | None:
    """In a process on jemalloc: stop the decay purging in its arenas, and instead return every idle
    page at once every `every_s` seconds from a daemon thread (the module docstring says why). Once
    per process; returns the thread, or None where the process is not on jemalloc."""
    global _purger
    if _purger is None and loaded_allocator() == "jemalloc":
        mallctl = ctypes.CDLL(None).mallctl
        _stop_decay(mallctl)
        _purger = threading.Thread(target=_purge_forever, args=(mallctl, every_s), name="jemalloc-purge", daemon=True)
        _purger.start()
    return _purger


def _stop_decay(mallctl) -> None:
    """dirty_decay_ms -1 in every arena now in use, and in those made later; an arena not yet made
    refuses the first write, and the second covers it."""
    never, never_size = ctypes.c_ssize_t(-1), ctypes.c_size_t(ctypes.sizeof(ctypes.c_ssize_t))
    count, size = ctypes.c_uint(), ctypes.c_size_t(ctypes.sizeof(ctypes.c_uint))
    _checked(mallctl(b"arenas.narenas", ctypes.byref(count), ctypes.byref(size), None, ctypes.c_size_t(0)))
    for arena in range(count.value):
        mallctl(f"arena.{arena}.dirty_decay_ms".encode(), None, None, ctypes.byref(never), never_size)
    _checked(mallctl(b"arenas.dirty_decay_ms", None, None, ctypes.byref(never), never_size))


def _purge_forever(mallctl, every_s: float) -> None:
    while True:
        time.sleep(every_s)
        _checked(mallctl(PURGE_ALL_ARENAS, None, None, None, ctypes.c_size_t(0)))


def _checked(code: int) -> None:
    if code != 0:
        raise OSError(code, f"jemalloc mallctl: {os.strerror(code)}")
