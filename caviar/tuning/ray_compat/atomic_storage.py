"""A local pyarrow filesystem whose file writes are atomic: a temporary file, then a rename.

Ray Tune stages result.json, the searcher state and experiment_state-*.json on the driver and
copies them onto the storage path with pyarrow's copy_files, which truncates each destination
before it writes. A driver killed mid-copy left 0-byte result.json files (whole trial histories
lost) and a 0-byte searcher state, from which `caviar resume` then started a bogus trial. Handed
to Ray as `storage_filesystem`, this one leaves every file either old and whole or new and whole.
Remote storage (s3://, gs://) needs none of this: an object upload is all-or-nothing already.
(The experiment state file itself, and its agreement with the searcher's: state_snapshot.py.)
Upstream: none filed. Canary: test_ray_compat checks Ray still stages through pyarrow's
copy_files.
"""

from __future__ import annotations

import os
import uuid

import pyarrow as pa
import pyarrow.fs as pafs

TMP_PREFIX = ".caviar-tmp-"


def atomic_local_filesystem() -> pafs.PyFileSystem:
    return pafs.PyFileSystem(AtomicLocalHandler())


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
