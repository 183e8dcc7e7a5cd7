"""A local pyarrow filesystem whose file writes are atomic: a temporary file, then a rename.

Ray Tune stages result.json, the searcher state and experiment_state-*.json on the driver and
copies them onto the storage path with pyarrow's copy_files, which truncates each destination
before it writes. A driver killed mid-copy left 0-byte result.json files (whole trial histories
lost) and a 0-byte searcher state, from which `caviar resume` then started a bogus trial. Handed
to Ray as `storage_filesystem`, this one leaves every file either old and whole or new and whole.
Remote storage (s3://, gs://) needs none of this: an object upload is all-or-nothing already.
Ray also writes experiment_state-*.json in place (TuneController.save_to_dir, open "w"); with local
storage that is the experiment folder itself, and a driver killed mid-write left it empty, so the
experiment could be neither read nor resumed. `atomic_local_filesystem` also makes that write land
by rename. Upstream: none filed. Canary: test_ray_compat checks Ray still stages through pyarrow's
copy_files.
"""

from __future__ import annotations

import os
import uuid

import pyarrow as pa
import pyarrow.fs as pafs

TMP_PREFIX = ".caviar-tmp-"


def atomic_local_filesystem() -> pafs.PyFileSystem:
    _save_experiment_state_atomically()
    return pafs.PyFileSystem(AtomicLocalHandler())


RAYS_SAVE_TO_DIR = None  # Ray's own, once replaced


def _save_experiment_state_atomically() -> None:
    """Ray 2.60's TuneController.save_to_dir, its state file written through model.files.atomic_path."""
    import json
    from pathlib import Path

    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.utils.serialization import TuneFunctionEncoder

    from model.files import atomic_path

    global RAYS_SAVE_TO_DIR
    if getattr(TuneController.save_to_dir, "caviar_atomic", False):
        return
    RAYS_SAVE_TO_DIR = TuneController.save_to_dir  # the canary reads its source

    def save_to_dir(self) -> None:
        state = {
            "trial_data": list(self._get_trial_checkpoints().values()),
            "runner_data": self.__getstate__(),
            "stats": {"start_time": self._start_time},
        }
        staging = self._storage.experiment_driver_staging_path
        os.makedirs(staging, exist_ok=True)
        with atomic_path(Path(staging, self.experiment_state_file_name)) as tmp, open(tmp, "w") as f:
            json.dump(state, f, cls=TuneFunctionEncoder)
        self._search_alg.save_to_dir(staging, session_str=self._session_str)
        self._callbacks.save_to_dir(staging, session_str=self._session_str)

    save_to_dir.caviar_atomic = True
    TuneController.save_to_dir = save_to_dir


class _RenameOnClose:
    """A binary file that becomes `final` only when closed; until then it is a hidden sibling."""

    def __init__(self, final: str):
        folder, name = os.path.split(final)
        self.final, self.tmp = final, os.path.join(folder, f"{TMP_PREFIX}{uuid.uuid4().hex[:8]}-{name}")
        self._file = open(self.tmp, "wb")  # noqa: SIM115 - closed in close()

    closed = property(lambda self: self._file.closed)

    def write(self, data) -> int:
        return self._file.write(data)

    def tell(self) -> int:
        return self._file.tell()

    def flush(self) -> None:
        self._file.flush()

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        if self._file.closed:
            return
        self._file.close()
        os.replace(self.tmp, self.final)


class AtomicLocalHandler(pafs.FileSystemHandler):
    """The local filesystem, except that output streams and file copies land by rename."""

    def __init__(self):
        self._fs = pafs.LocalFileSystem()

    def __eq__(self, other) -> bool:
        return isinstance(other, AtomicLocalHandler)

    def __reduce__(self):  # Ray pickles the filesystem into every trial's worker
        return AtomicLocalHandler, ()

    def get_type_name(self) -> str:
        return "caviar-atomic-local"

    def normalize_path(self, path: str) -> str:
        return self._fs.normalize_path(path)

    def get_file_info(self, paths):
        return self._fs.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self._fs.get_file_info(selector)

    def create_dir(self, path: str, recursive: bool) -> None:
        self._fs.create_dir(path, recursive=recursive)

    def delete_dir(self, path: str) -> None:
        self._fs.delete_dir(path)

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        self._fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self) -> None:
        raise OSError("refusing to delete the contents of the filesystem root")

    def delete_file(self, path: str) -> None:
        self._fs.delete_file(path)

    def move(self, src: str, dest: str) -> None:
        self._fs.move(src, dest)

    def copy_file(self, src: str, dest: str) -> None:
        with self._fs.open_input_stream(src) as source, self.open_output_stream(dest, None) as sink:
            while chunk := source.read(1 << 20):
                sink.write(chunk)

    def open_input_stream(self, path: str):
        return self._fs.open_input_stream(path)

    def open_input_file(self, path: str):
        return self._fs.open_input_file(path)

    def open_output_stream(self, path: str, metadata):
        return pa.PythonFile(_RenameOnClose(path), mode="w")

    def open_append_stream(self, path: str, metadata):
        return self._fs.open_append_stream(path)
