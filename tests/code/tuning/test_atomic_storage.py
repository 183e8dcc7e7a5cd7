"""The storage filesystem handed to Ray: a kill mid-write must leave the old file whole."""

from __future__ import annotations

import pickle

import pyarrow.fs as pafs

from caviar.tuning.ray_compat.atomic_storage import TMP_PREFIX, atomic_local_filesystem


def test_copy_files_replaces_whole_files(tmp_path):
    (tmp_path / "src" / "trial").mkdir(parents=True)
    (tmp_path / "src" / "trial" / "result.json").write_text("new\n" * 1000)
    (tmp_path / "dst" / "trial").mkdir(parents=True)
    (tmp_path / "dst" / "trial" / "result.json").write_text("old\n")
    pafs.copy_files(
        str(tmp_path / "src"),
        str(tmp_path / "dst"),
        source_filesystem=pafs.LocalFileSystem(),
        destination_filesystem=atomic_local_filesystem(),
    )
    assert (tmp_path / "dst" / "trial" / "result.json").read_text() == "new\n" * 1000
    assert not list((tmp_path / "dst").rglob(f"{TMP_PREFIX}*"))


def test_an_unfinished_write_leaves_the_old_file(tmp_path):
    target = tmp_path / "experiment_state.json"
    target.write_text('{"trials": 4}')
    stream = atomic_local_filesystem().open_output_stream(str(target))
    stream.write(b'{"tri')  # the driver dies here
    assert target.read_text() == '{"trials": 4}'
    stream.close()
    assert target.read_text() == '{"tri'


def test_copy_file_and_pickling(tmp_path):
    fs = pickle.loads(pickle.dumps(atomic_local_filesystem()))  # Ray ships it to every worker
    assert fs.equals(atomic_local_filesystem())
    (tmp_path / "a.bin").write_bytes(bytes(range(256)) * 9000)
    fs.copy_file(str(tmp_path / "a.bin"), str(tmp_path / "b.bin"))
    assert (tmp_path / "b.bin").read_bytes() == (tmp_path / "a.bin").read_bytes()
    assert [i.path for i in fs.get_file_info(pafs.FileSelector(str(tmp_path)))] == sorted(
        str(p) for p in tmp_path.iterdir()
    )
