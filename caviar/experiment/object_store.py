"""Experiments on object storage (s3://, gs://): the filesystem for a URI, and a local mirror of an
experiment that holds everything but its checkpoints' weights.

caviar's readers (the outcome, report, promote) work on folders. So an experiment on the store is
read through a mirror in the cache, `<CAVIAR_CACHE>/remote/<sha of the URI>/<name>`, that holds
Ray's records, caviar's records and each checkpoint's metrics and validation predictions, but not
its weights or optimizer state: those are fetched for the one checkpoint a command uses (promote's
candidate, report's --evaluate-top). A file is downloaded again only when its size or time on the
store changed, and every write to the store is one whole object. The filesystem for a URI is
model/remote.py's (it honours AWS_ENDPOINT_URL, which pyarrow's own does not).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from model.checkpoint import META, STATE, WEIGHTS, is_checkpoint
from model.errors import UserError
from model.files import file_sha256, read_json_object, write_json_atomically
from model.remote import SCHEMES, download, filesystem, is_uri, reason, where
from model.settings import settings

MANIFEST = ".caviar-mirror.json"  # at a mirror's root: its URI, what it holds and what it left out
LEFT_OUT = (WEIGHTS, STATE)  # a checkpoint's large files: fetched only for the checkpoint in use
__all__ = ["SCHEMES", "Mirror", "check_reachable", "filesystem", "is_uri", "known_as", "mirror_of"]


def check_reachable(uri: str) -> None:
    """The store answers, the credentials work and the bucket exists: one line each, before any trial."""
    import pyarrow.fs as pafs

    fs, path = filesystem(uri)
    bucket = path.split("/", 1)[0]
    try:
        found = fs.get_file_info(bucket)
    except OSError as err:
        raise UserError(f"storage {uri}: cannot reach it ({reason(err)}); {where()}") from None
    if found.type == pafs.FileType.NotFound:
        raise UserError(f"storage {uri}: the bucket {bucket} does not exist; create it, or point storage elsewhere")


@contextlib.contextmanager
def outage_is_one_line(uri: str, then: str):
    """A store that stops answering inside the block (Ray's uploads and listings fail, and so does
    the mirror) ends it in one line saying what to run once it is back, not in Ray's traceback."""
    try:
        yield
    except (OSError, UserError):
        try:
            check_reachable(uri)
        except UserError as down:
            why = str(down).split("(", 1)[-1].split(")", 1)[0]
            raise UserError(
                f"{uri}: the store stopped answering during the run ({why}); what reached it is kept. "
                f"When it answers again: {then}"
            ) from None
        raise


def put_folder(local: Path, uri: str, last: str | None = None) -> None:
    """Every file under `local` to `uri`, each one whole object; `last` goes after all the others,
    so that its presence on the store marks the folder whole."""
    fs, root = filesystem(uri)
    files = sorted((p for p in local.rglob("*") if p.is_file()), key=lambda p: (p.name == last, str(p)))
    try:
        for path in files:
            with fs.open_output_stream(f"{root}/{path.relative_to(local).as_posix()}") as out, open(path, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)
    except OSError as err:
        raise UserError(f"{uri}: cannot write it ({reason(err)}); {where()}") from None


@dataclass
class Mirror:
    """A local copy of an experiment on the store, less its checkpoints' large files."""

    uri: str
    folder: Path

    @classmethod
    def of(cls, uri: str) -> Mirror:
        uri = uri.rstrip("/")
        key = hashlib.sha256(uri.encode()).hexdigest()[:16]
        return cls(uri, settings().cache / "remote" / key / uri.rsplit("/", 1)[-1])

    def pull(self) -> Path:
        """Bring the mirror up to date with the store; returns its folder."""
        import pyarrow.fs as pafs

        fs, root = filesystem(self.uri)
        try:
            listed = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
        except OSError as err:
            raise UserError(f"{self.uri}: cannot read it ({reason(err)}); {where()}") from None
        files = {i.path[len(root) + 1 :]: i for i in listed if i.type == pafs.FileType.File}
        if not files:
            raise UserError(f"{self.uri}: no such experiment on the store")
        old = self.manifest().get("files", {})
        held, left_out = {}, {}
        self.folder.mkdir(parents=True, exist_ok=True)
        for rel, info in files.items():
            stamp = [info.size, info.mtime_ns]
            if Path(rel).name in LEFT_OUT and "/checkpoint_" in f"/{rel}":
                left_out[rel] = info.size
                continue
            if old.get(rel) != stamp or not (self.folder / rel).is_file():
                download(fs, f"{root}/{rel}", self.folder / rel)
            held[rel] = stamp
        for local in [f for f in self.folder.rglob("*") if f.is_file() and f.name != MANIFEST]:
            if local.relative_to(self.folder).as_posix() not in files:  # gone from the store (a pruned
                local.unlink()  # checkpoint, fetched weights and all): gone here too
        write_json_atomically(self.folder / MANIFEST, {"uri": self.uri, "files": held, "left_out": left_out})
        return self.folder

    def start_afresh(self) -> Path:
        """An empty mirror folder for an experiment about to start on the store: what a cache held
        under the same URI is of one deleted since."""
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        return self.folder

    def exists(self, name: str) -> bool:
        import pyarrow.fs as pafs

        fs, root = filesystem(self.uri)
        return fs.get_file_info(f"{root}/{name}").type != pafs.FileType.NotFound

    def manifest(self) -> dict:
        path = self.folder / MANIFEST
        return read_manifest(path) if path.is_file() else {}

    def complete(self, checkpoint: Path) -> Path:
        """Fetch a checkpoint's large files, which pull left out, each checked against the sha256
        its checkpoint recorded (caviar.json): a copy damaged on the store or on the way is refused."""
        fs, root = filesystem(self.uri)
        rel = Path(checkpoint).resolve().relative_to(self.folder.resolve()).as_posix()
        recorded = _recorded_digests(Path(checkpoint))
        for name in self.manifest().get("left_out", {}):
            local = self.folder / name
            if name.startswith(rel + "/") and not local.is_file():
                download(fs, f"{root}/{name}", local)
                if (want := recorded.get(local.name)) is not None and file_sha256(local) != want:
                    local.unlink()
                    raise UserError(
                        f"{self.uri}/{name}: its sha256 is not the one its checkpoint recorded "
                        "(damaged on the store or on the way); nothing was used"
                    )
        return checkpoint

    def push(self, *names: str) -> None:
        """Copy files of the mirror's root (the outcome, the report) to the store, each one whole object."""
        fs, root = filesystem(self.uri)
        for name in names:
            source = self.folder / name
            try:
                with fs.open_output_stream(f"{root}/{name}") as out:
                    out.write(source.read_bytes())
            except OSError as err:
                raise UserError(f"{self.uri}/{name}: cannot write it ({reason(err)}); {where()}") from None

    def rename_dir(self, source: Path, dest: Path) -> None:
        """A folder of the mirror renamed, here and on the store (each object copied, then the old deleted)."""
        import pyarrow.fs as pafs

        fs, root = filesystem(self.uri)
        old, new = (Path(p).resolve().relative_to(self.folder.resolve()).as_posix() for p in (source, dest))
        listed = fs.get_file_info(pafs.FileSelector(f"{root}/{old}", recursive=True))
        for info in (i for i in listed if i.type == pafs.FileType.File):
            fs.copy_file(info.path, f"{root}/{new}{info.path[len(f'{root}/{old}') :]}")
        fs.delete_dir(f"{root}/{old}")
        Path(source).rename(dest)
        self.pull()  # the manifest follows the store

    @contextlib.contextmanager
    def changes_pushed(self, folder: Path | None = None):
        """Files directly in `folder` (by default the mirror's root) written, replaced or renamed
        inside the block are so on the store too."""
        folder = Path(folder or self.folder)
        rel = folder.resolve().relative_to(self.folder.resolve())

        def stamps() -> dict:
            return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file()}

        before = stamps()
        yield
        after = stamps()
        self.push(*[(rel / n).as_posix() for n, stamp in after.items() if before.get(n) != stamp and n != MANIFEST])
        fs, root = filesystem(self.uri)
        for name in set(before) - set(after):
            fs.delete_file(f"{root}/{(rel / name).as_posix()}")

    def put_json(self, name: str, record: dict | list) -> None:
        """A record of caviar's, in the mirror and as one whole object on the store."""
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json_atomically(self.folder / name, record)
        self.push(name)

    def drop_missing_checkpoints(self) -> int:
        """Delete on the store the checkpoint folders pruned from the mirror; returns the bytes freed."""
        fs, root = filesystem(self.uri)
        manifest, freed = self.manifest(), 0
        folders = {str(Path(rel).parent) for rel in [*manifest.get("files", {}), *manifest.get("left_out", {})]}
        for folder in sorted(f for f in folders if Path(f).name.startswith("checkpoint_")):
            if not (self.folder / folder).is_dir():
                fs.delete_dir(f"{root}/{folder}")
                freed += sum(size for rel, size in manifest.get("left_out", {}).items() if rel.startswith(folder + "/"))
        return freed

    def local_of(self, uri: str) -> Path:
        """The mirror's path of a URI inside the experiment (uri_of, the other way)."""
        return self.folder / uri[len(self.uri) :].lstrip("/")

    def uri_of(self, path: str | Path) -> str:
        """A path inside the mirror, spelt as the user knows it: on the store."""
        text = str(path)
        for base in (str(self.folder.resolve()), str(self.folder)):
            if text == base or text.startswith(base + "/"):
                return self.uri + text[len(base) :]
        return text


def _recorded_digests(checkpoint: Path) -> dict:
    """The large files' sha256 a checkpoint's caviar.json recorded (none in older checkpoints)."""
    try:
        digests = read_json_object(checkpoint / META).get("sha256")
    except UserError:
        return {}  # a damaged caviar.json: the load that follows names it
    return digests if isinstance(digests, dict) else {}


def read_manifest(path: Path) -> dict:
    """A mirror's manifest, parsed once per version of the file: every row of a report and every
    checkpoint's size asks for it. Read-only to its callers."""
    stat = path.stat()
    return _parsed(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _parsed(path: str, mtime_ns: int, size: int) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def mirror_of(folder: Path) -> Mirror | None:
    """The mirror a local folder lies in, if any (its root holds the manifest)."""
    folder = Path(folder).resolve()
    for candidate in (folder, *folder.parents):
        if (candidate / MANIFEST).is_file():
            return Mirror(read_manifest(candidate / MANIFEST)["uri"], candidate)
    return None


def write_record(path: Path, payload: dict | list) -> None:
    """One of caviar's JSON records in an experiment, written whole: on object storage into the
    mirror and as one object on the store, else on the disk."""
    mirror = mirror_of(Path(path).parent)
    if mirror is None:
        write_json_atomically(path, payload)
    else:
        mirror.put_json(Path(path).resolve().relative_to(mirror.folder.resolve()).as_posix(), payload)


def left_out_bytes(folder: Path) -> int:
    """Bytes under `folder` that its mirror left on the store (0 for a folder that is no mirror)."""
    mirror = mirror_of(folder)
    if mirror is None:
        return 0
    rel = Path(folder).resolve().relative_to(mirror.folder.resolve()).as_posix()
    left = mirror.manifest().get("left_out", {})
    return sum(
        size
        for name, size in left.items()
        if (name.startswith(rel + "/") or rel == ".") and not (mirror.folder / name).is_file()
    )


def holds_checkpoint(folder: Path) -> bool:
    """model.checkpoint.is_checkpoint, where a mirror's left-out weights count as held: they are on
    the store, fetched when the checkpoint is used."""
    folder = Path(folder)
    if is_checkpoint(folder):
        return True
    mirror = mirror_of(folder)
    if mirror is None or not (folder / META).is_file():
        return False
    rel = folder.resolve().relative_to(mirror.folder.resolve()).as_posix()
    return f"{rel}/{WEIGHTS}" in mirror.manifest().get("left_out", {})


def known_as(path: str | Path) -> str:
    """A local path as the user knows it: its URI when it lies in a mirror of an experiment on the store."""
    mirror = mirror_of(Path(path))
    return str(path) if mirror is None else mirror.uri_of(Path(path).resolve())
