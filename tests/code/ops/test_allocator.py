"""The `caviar` command restarts itself once on jemalloc where it is installed, and never where it is
switched off, missing, or already loaded; the installed jemalloc takes its settings as written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from caviar.ops import allocator
from caviar.ops.allocator import MALLOC_CONF, MISSING_NOTE, find_jemalloc, jemalloc_env, missing_jemalloc_note

# a small library every glibc system has and Python never loads: stands in for jemalloc where the
# test checks the restart itself, so it runs on machines without jemalloc too
STAND_IN = next(
    (p for p in ("/lib/x86_64-linux-gnu/libutil.so.1", "/usr/lib64/libutil.so.1") if Path(p).is_file()), None
)


@pytest.fixture
def library(tmp_path) -> str:
    path = tmp_path / "libjemalloc.so.2"
    path.write_bytes(b"")
    return str(path)


def test_the_environment_preloads_jemalloc_with_caviars_settings(library):
    env = jemalloc_env({"CAVIAR_JEMALLOC": library, "PATH": "/bin"})
    assert env == {"CAVIAR_JEMALLOC": library, "PATH": "/bin", "LD_PRELOAD": library, "MALLOC_CONF": MALLOC_CONF}


def test_a_users_preload_and_malloc_conf_are_kept(library):
    env = jemalloc_env({"CAVIAR_JEMALLOC": library, "LD_PRELOAD": "/x/libfoo.so", "MALLOC_CONF": "narenas:4"})
    assert env["LD_PRELOAD"] == f"/x/libfoo.so {library}"
    assert env["MALLOC_CONF"] == "narenas:4"


@pytest.mark.parametrize(
    "environ",
    [
        {"CAVIAR_JEMALLOC": "{lib}", "CAVIAR_ALLOCATOR": "system"},  # the user's opt-out
        {"CAVIAR_JEMALLOC": "{lib}", "LD_PRELOAD": "{lib}"},  # already restarted: never a second time
        {"CAVIAR_JEMALLOC": "{lib}", "LD_PRELOAD": "/opt/libtcmalloc.so.4"},  # the user's own allocator
    ],
    ids=["opted-out", "already-preloaded", "users-allocator"],
)
def test_no_restart_where_it_is_off_or_done_or_impossible(library, environ):
    assert jemalloc_env({k: v.format(lib=library) for k, v in environ.items()}) is None


def test_no_restart_where_jemalloc_is_not_installed(monkeypatch):
    monkeypatch.setattr(allocator, "SEARCHED", ("/nowhere/libjemalloc.so.2",))
    assert jemalloc_env({"PATH": "/bin"}) is None


def test_a_missing_jemalloc_is_named_in_one_line_unless_the_user_chose_otherwise(monkeypatch, library):
    monkeypatch.setattr(allocator, "SEARCHED", ("/nowhere/libjemalloc.so.2",))
    assert missing_jemalloc_note({"PATH": "/bin"}) == MISSING_NOTE
    assert "apt install libjemalloc2" in MISSING_NOTE and "\n" not in MISSING_NOTE
    assert missing_jemalloc_note({"CAVIAR_ALLOCATOR": "system"}) is None
    assert missing_jemalloc_note({"LD_PRELOAD": "/opt/libtcmalloc.so.4"}) is None
    assert missing_jemalloc_note({"CAVIAR_JEMALLOC": library}) is None


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"CAVIAR_ALLOCATOR": "glibc"}, "CAVIAR_ALLOCATOR=glibc: use one of jemalloc, system"),
        ({"CAVIAR_JEMALLOC": "/nowhere/libjemalloc.so.2"}, "CAVIAR_JEMALLOC=/nowhere/libjemalloc.so.2: no such file"),
    ],
    ids=["unknown-choice", "named-but-missing"],
)
def test_a_wrong_setting_is_one_line_and_exit_2(environ, message):
    """Checked by the commands that train, before anything else (the job file here does not exist)."""
    proc = subprocess.run(
        [sys.executable, "-m", "caviar", "train", "no-such-job.yaml"],
        env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), **environ},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"caviar: error: {message}"


def loaded_after_restart(env: dict) -> str:
    code = (
        "from caviar.ops.allocator import restart_on_jemalloc; restart_on_jemalloc(); import os, pathlib; "
        "maps = pathlib.Path('/proc/self/maps').read_text(); "
        "print(os.environ.get('MALLOC_CONF'), 'libutil' in maps, 'libjemalloc' in maps)"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.mark.skipif(STAND_IN is None, reason="no libutil.so.1 to stand in for jemalloc")
def test_the_process_restarts_with_the_library_loaded():
    base = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    assert loaded_after_restart({**base, "CAVIAR_JEMALLOC": STAND_IN}) == f"{MALLOC_CONF} True False"
    assert (
        loaded_after_restart({**base, "CAVIAR_JEMALLOC": STAND_IN, "CAVIAR_ALLOCATOR": "system"}) == "None False False"
    )


@pytest.mark.skipif(find_jemalloc() is None, reason="jemalloc is not installed here")
def test_the_restart_loads_the_installed_jemalloc():
    assert loaded_after_restart({"PATH": "/usr/bin:/bin", "HOME": str(Path.home())}).endswith("True")


@pytest.mark.skipif(find_jemalloc() is None, reason="jemalloc is not installed here")
def test_the_installed_jemalloc_purges_idle_pages_from_a_background_thread():
    """jemalloc meets a misspelt MALLOC_CONF key with a warning and runs on: with purging off, a 4-layer
    stage 0 grew until it filled the machine. Read the settings back from the running allocator."""
    code = (
        "import ctypes; lib = ctypes.CDLL(None); out = []\n"
        "for name, kind in (('opt.background_thread', ctypes.c_bool), ('opt.dirty_decay_ms', ctypes.c_ssize_t),"
        " ('opt.oversize_threshold', ctypes.c_size_t)):\n"
        "    value, size = kind(), ctypes.c_size_t(ctypes.sizeof(kind))\n"
        "    assert lib.mallctl(name.encode(), ctypes.byref(value), ctypes.byref(size), None, 0) == 0, name\n"
        "    out.append(str(value.value))\n"
        "print(*out)"
    )
    env = {"PATH": "/usr/bin:/bin", "LD_PRELOAD": find_jemalloc(), "MALLOC_CONF": MALLOC_CONF}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "<jemalloc>" not in proc.stderr, proc.stderr
    background, dirty_decay_ms, oversize_threshold = proc.stdout.split()
    assert background == "True"  # idle pages go back to the OS off the training step's path
    assert 0 < int(dirty_decay_ms) <= 60_000  # returned, and only after a while: -1 never returns them
    assert oversize_threshold == "0"  # no arena that purges every large block as it is freed


PURGE_PROBE = """
import ctypes, time
from caviar.ops.allocator import purge_on_a_timer
from bench.common import rss_gb

def decay(name):
    value, size = ctypes.c_ssize_t(), ctypes.c_size_t(ctypes.sizeof(ctypes.c_ssize_t))
    assert ctypes.CDLL(None).mallctl(name.encode(), ctypes.byref(value), ctypes.byref(size), None, 0) == 0
    return value.value

blocks = [bytearray(b"x" * (1 << 20)) for _ in range(400)]  # 400 MiB, touched
assert purge_on_a_timer(0.2) is purge_on_a_timer(0.2)  # one thread per process
held = rss_gb()
del blocks
time.sleep(1.0)
print(decay("arena.0.dirty_decay_ms"), decay("arenas.dirty_decay_ms"), round((held - rss_gb()) * 1024))
"""


@pytest.mark.skipif(find_jemalloc() is None, reason="jemalloc is not installed here")
def test_a_training_process_turns_decay_off_and_returns_all_idle_pages_on_a_timer():
    """Decay returns a few pages all the time and the next step faults them back in (0.85-0.89x glibc's
    speed against 1.18-1.19x with the timer); the timer returns them all at once. Within 1 s of the free, the
    decay would have returned only a sliver of the 400 MiB."""
    env = {"PATH": "/usr/bin:/bin", "LD_PRELOAD": find_jemalloc(), "MALLOC_CONF": MALLOC_CONF}
    proc = subprocess.run([sys.executable, "-c", PURGE_PROBE], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    arena_decay, new_arena_decay, returned_mib = map(int, proc.stdout.split())
    assert arena_decay == new_arena_decay == -1  # no steady purging, now or in arenas made later
    assert returned_mib > 300


def test_off_jemalloc_there_is_no_timer():
    code = "from caviar.ops.allocator import purge_on_a_timer; print(purge_on_a_timer())"
    env = {"PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "None", proc.stderr
