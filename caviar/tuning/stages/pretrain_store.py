"""Stage 0 of a tune on object storage: the pretrained folders live on the store, under
`<storage>/pretrain/`, found by their key as on a disk, so every node fetches the same one
(model/remote.py) and none needs the driver's disk.

Unlike a shared disk, a store has no lock: two drivers that start the same stage 0 at once both
pretrain, into two folders; later jobs take the newer.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable

from caviar.experiment.layout import PRETRAIN_CARD, PRETRAIN_DIR, timestamped
from caviar.experiment.object_store import put_folder
from model.errors import UserError
from model.remote import fetch_folder, filesystem, reason
from model.settings import settings

log = logging.getLogger("caviar.pretrain")


def root_on_store(storage: str) -> str:
    return f"{storage.rstrip('/')}/{PRETRAIN_DIR}"


def found_on_store(storage: str, key: str, find: Callable) -> tuple[str, object] | None:
    """(URI, card) of the newest finished folder on the store made with this key. Folders are named
    `<job>-<time>-<key[:6]>`: only those are fetched and their cards read (`find`, as on a disk)."""
    import pyarrow.fs as pafs

    fs, root = filesystem(root_on_store(storage))
    try:
        listed = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    except OSError as err:
        raise UserError(f"{root_on_store(storage)}: cannot list it ({reason(err)})") from None
    found = None
    for name in sorted(i.base_name for i in listed if i.type == pafs.FileType.Directory):
        if not name.endswith(f"-{key[:6]}"):
            continue
        uri = f"{root_on_store(storage)}/{name}"
        if (hit := find(fetch_folder(uri).parent, key)) is not None:
            found = (uri, hit[1])
    return found


def made_on_store(job, splits, progress: bool, key: str, run: Callable) -> tuple[str, object]:
    """Pretrain into a staging folder in the cache, then put it on the store, its card last."""
    name = f"{timestamped(job.name)}-{key[:6]}"
    uri = f"{root_on_store(job.storage)}/{name}"
    staging = settings().cache / "pretrain-staging" / name
    staging.mkdir(parents=True, exist_ok=False)
    log.info("stage 0: %s pretraining, to be put on the store at %s", job.pretrain.objective.upper(), uri)
    try:
        card = run(job, staging, splits, progress)
        put_folder(staging, uri, last=PRETRAIN_CARD)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return uri, card
