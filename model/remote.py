"""Object storage (s3://, gs://) as the model sees it: the filesystem for a URI, and a model folder
on the store (`model.pretrained: s3://...`, a stage-0 folder of a tune on object storage) fetched
into this machine's cache, so that every node of a cluster with no shared disk can load it.

pyarrow's S3 filesystem ignores AWS_ENDPOINT_URL (apache/arrow#49643), which S3-compatible stores
(MinIO, moto) need, so the filesystem is built here from the standard AWS_* settings. The keys are
passed explicitly, so that the filesystem Ray ships to trials on other nodes carries them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from urllib.parse import urlparse

from model.errors import UserError, short
from model.files import atomic_path, write_json_atomically
from model.settings import settings

SCHEMES = ("s3://", "gs://")
FETCHED = ".fetched.json"  # in a fetched folder: each file's size and time on the store


def is_uri(location: str | Path) -> bool:
    return str(location).startswith(SCHEMES)


def filesystem(uri: str):
    """(pyarrow filesystem, path inside it) for an s3:// or gs:// URI."""
    import pyarrow.fs as pafs

    if not is_uri(uri):
        raise UserError(f"{short(uri, 120)}: not an object-store URI (s3://bucket/path or gs://bucket/path)")
    if uri.startswith("gs://"):
        return pafs.FileSystem.from_uri(uri)
    aws = settings().aws
    options: dict = {"region": aws.region, "connect_timeout": 5, "request_timeout": 30}
    if aws.endpoint:
        endpoint = urlparse(aws.endpoint if "://" in aws.endpoint else f"https://{aws.endpoint}")
        options |= {"endpoint_override": endpoint.netloc, "scheme": endpoint.scheme}
    if aws.access_key and aws.secret_key:
        options |= {"access_key": aws.access_key, "secret_key": aws.secret_key, "session_token": aws.session_token}
    return pafs.S3FileSystem(**options), uri.removeprefix("s3://").rstrip("/")


def reason(err: OSError) -> str:
    """What a store's error means to the user, in a few words."""
    text = str(err)
    for marker, meaning in (
        ("Could not connect", "the store does not answer"),
        ("ACCESS_DENIED", "access denied: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
        ("INVALID_ACCESS_KEY_ID", "the access key is unknown: check AWS_ACCESS_KEY_ID"),
        ("InvalidAccessKeyId", "the access key is unknown: check AWS_ACCESS_KEY_ID"),
        ("SIGNATURE_DOES_NOT_MATCH", "the secret key is wrong: check AWS_SECRET_ACCESS_KEY"),
        ("SignatureDoesNotMatch", "the secret key is wrong: check AWS_SECRET_ACCESS_KEY"),
        ("HTTP response code: 403", "access denied: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
    ):
        if marker in text:
            return meaning
    return short(text.strip().splitlines()[0] if text.strip() else type(err).__name__, 160)


def where() -> str:
    endpoint = settings().aws.endpoint
    return f"AWS_ENDPOINT_URL is {endpoint}" if endpoint else "AWS_ENDPOINT_URL is unset (AWS itself)"


def download(fs, source: str, dest: Path) -> None:
    """One object into one file, whole or not at all."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp, fs.open_input_stream(source) as stream, open(tmp, "wb") as out:
        while chunk := stream.read(1 << 20):
            out.write(chunk)


def model_source(source: str) -> str:
    """What transformers loads for `model.pretrained`: a hub id or folder as given, a URI's folder
    fetched into the cache."""
    return str(fetch_folder(source)) if is_uri(source) else source


def fetch_folder(uri: str) -> Path:
    """A folder on the store, in `<CAVIAR_CACHE>/models/<sha of the URI>/<name>`; a file is fetched
    again only when its size or time on the store changed. Trials on one node share the copy."""
    import pyarrow.fs as pafs
    from filelock import FileLock

    uri = uri.rstrip("/")
    folder = settings().cache / "models" / hashlib.sha256(uri.encode()).hexdigest()[:16] / uri.rsplit("/", 1)[-1]
    folder.mkdir(parents=True, exist_ok=True)
    fs, root = filesystem(uri)
    with FileLock(str(folder.parent / ".lock")):
        try:
            listed = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
            files = {i.path[len(root) + 1 :]: i for i in listed if i.type == pafs.FileType.File}
            if not files:
                raise UserError(f"model.pretrained={uri}: nothing there on the store")
            old = _fetched(folder)
            for rel, info in files.items():
                if old.get(rel) != [info.size, info.mtime_ns] or not (folder / rel).is_file():
                    download(fs, f"{root}/{rel}", folder / rel)
        except OSError as err:
            raise UserError(f"model.pretrained={uri}: cannot fetch it ({reason(err)}); {where()}") from None
        write_json_atomically(folder / FETCHED, {rel: [i.size, i.mtime_ns] for rel, i in files.items()})
    return folder


def _fetched(folder: Path) -> dict:
    try:
        return json.loads((folder / FETCHED).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
