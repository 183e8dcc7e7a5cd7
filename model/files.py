"""Files on disk: write-then-rename, the one way files and folders are written (a crash leaves the old
version or the new one, never half of either), and the one JSON reader. Both packages import it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from model.errors import UserError


@contextlib.contextmanager
def atomic_path(path: Path, suffix: str = "") -> Iterator[Path]:
    """A temp path beside `path` to write into; renamed over `path` on success, removed on failure.
    `suffix` keeps an extension for writers that read it (matplotlib picks the format by it)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomically(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomically(path: Path, payload) -> None:
    write_text_atomically(path, json.dumps(payload, indent=2, ensure_ascii=False, default=str))


def write_atomically(final: Path, fill: Callable[[Path], None]) -> Path:
    """Build a folder beside `final` with fill(tmp_dir), then swap it in; a crash leaves the old one."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        fill(tmp)
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def read_json(path: Path) -> Any:
    """The one reader of caviar's JSON files. A damaged file is one UserError naming it, never a
    traceback: callers that scan many folders catch it and skip the one."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: missing") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: damaged, not UTF-8 text") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read it ({err.strerror or err})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: damaged, not valid JSON ({err.msg}, line {err.lineno})") from None
    except RecursionError:
        raise UserError(f"{path}: damaged, nested too deeply to be caviar's") from None


def read_json_object(path: Path) -> dict:
    """read_json for files that hold one JSON object (cards, records, results)."""
    value = read_json(path)
    if not isinstance(value, dict):
        raise UserError(f"{path}: damaged, it must be a JSON object (got {type(value).__name__})")
    return value


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


TEMP_CHECKPOINT = re.compile(r"caviar-ckpt-([0-9]+)-.+")  # caviar-ckpt-<pid>-<random>


def temp_checkpoint_dir() -> Path:
    """A fresh folder for one checkpoint on its way to Ray, named by this process's id, so that a
    later run can sweep away what a killed one left (sweep_dead_temp_checkpoints)."""
    return Path(tempfile.mkdtemp(prefix=f"caviar-ckpt-{os.getpid()}-"))


def sweep_dead_temp_checkpoints() -> int:
    """Remove the temp checkpoint folders of processes that are gone (a SIGKILL mid-report); how many."""
    removed = 0
    for path in Path(tempfile.gettempdir()).glob("caviar-ckpt-*"):
        match = TEMP_CHECKPOINT.fullmatch(path.name)
        if match and path.is_dir() and not path.is_symlink() and not process_alive(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed


def writable_folder(root: Path, named: str) -> Path:
    """`root`, made if need be: a path that is no folder caviar can make and write in is one line
    naming the variable that set it, before anything is written there."""
    if root.exists() and not root.is_dir():
        raise UserError(f"{named}={root}: a file, not a folder; point it at a folder caviar can write in")
    try:
        root.mkdir(parents=True, exist_ok=True)
        if not os.access(root, os.W_OK | os.X_OK):
            raise PermissionError(f"no write permission in {root}")
    except OSError as err:
        reason = err.strerror or str(err)
        raise UserError(f"{named}={root}: not a folder caviar can write in ({reason}); point it at one") from None
    return root


def free_bytes(path: Path) -> int:
    """Free space on the file system that holds `path`, or would once it is made."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def is_out_of_space(err: BaseException | None) -> bool:
    """ENOSPC anywhere in the chain: raised here, as a cause, or inside a Ray task's error."""
    seen = 0
    while err is not None and seen < 16:
        if getattr(err, "errno", None) == errno.ENOSPC or "No space left on device" in str(err):
            return True
        err, seen = err.__cause__ or err.__context__ or getattr(err, "cause", None), seen + 1
    return False


def out_of_space(path: Path, then: str) -> UserError:
    """The one line a full disk gets: where, how much is free, and what to do once there is room."""
    return UserError(f"no space left on {path}: {free_bytes(path) / 1e6:,.0f} MB free; {then}")


def check_room(folder: Path, need: int, then: str, what: str = "the folder") -> None:
    """Refuse to start when `folder`'s disk has less than `need` bytes free, or when `folder` can
    never be made there (a read-only or virtual file system reports 0 free: that is no full disk)."""
    made = Path(folder).absolute()
    while not made.exists() and made != made.parent:
        made = made.parent
    try:  # a real write: root passes every permission check, and /proc answers none truthfully
        os.rmdir(tempfile.mkdtemp(prefix=".caviar-probe-", dir=made))
    except OSError as err:
        if err.errno != errno.ENOSPC:  # a full disk is said below, with what it needs
            raise UserError(
                f"{folder}: cannot create {what} ({made}: {err.strerror or err}); choose another place"
            ) from None
    if free_bytes(folder) < need:
        raise UserError(f"{out_of_space(folder, then)}; this needs about {need / 1e6:,.0f} MB")


@contextlib.contextmanager
def out_of_space_is_one_line(path: Path, then: str) -> Iterator[None]:
    """ENOSPC from any writer inside (tensorboardX, pyarrow, torch, safetensors) as out_of_space()."""
    try:
        yield
    except UserError:
        raise
    except Exception as err:
        if is_out_of_space(err):
            raise out_of_space(path, then) from None
        raise
