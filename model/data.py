"""NSMC on disk: find or download the files, parse them strictly, split train/val, fingerprint.

NSMC rows are `id<TAB>document<TAB>label` under one header row, no quoting (reviews contain
quote marks). Labels: 0 = 부정 (negative), 1 = 긍정 (positive).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from model.config import DataConfig
from model.errors import UserError
from model.files import atomic_path, writable_folder
from model.settings import settings
from model.split import SPLIT_VERSION, HeldOut, held_out, parts_of, split_version, stratified_pick

log = logging.getLogger("caviar.data")

TRAIN_FILE, TEST_FILE = "ratings_train.txt", "ratings_test.txt"
HEADER = "id\tdocument\tlabel"
EXPECTED_ROWS = {TRAIN_FILE: 150_000, TEST_FILE: 50_000}
LABEL_NAMES = ("부정", "긍정")
MAX_BAD_FRACTION = 0.01
MAX_REVIEW_CHARS = 10_000  # NSMC's reviews are at most 140 characters; a longer line is a bad row
HOW_TO_POINT = "set data.dir in the job (or NSMC_DIR) to a folder holding ratings_train.txt and ratings_test.txt"


def cache_root() -> Path:
    """Shared on-disk cache (NSMC copy, tokenizers); CAVIAR_CACHE moves it, e.g. in tests."""
    return writable_folder(settings().cache, "CAVIAR_CACHE")


def has_nsmc(folder: Path) -> bool:
    """Both NSMC files are there."""
    return (folder / TRAIN_FILE).is_file() and (folder / TEST_FILE).is_file()


def locate_nsmc(cfg: DataConfig) -> Path:
    """The folder with both NSMC files: data.dir, then NSMC_DIR, then the cache, else download."""
    for origin, value in (("data.dir", cfg.dir), ("NSMC_DIR", settings().nsmc_dir)):
        if value:
            folder = Path(value).expanduser()
            if not has_nsmc(folder):
                raise UserError(f"{origin}={value} does not hold {TRAIN_FILE} and {TEST_FILE}")
            if origin == "NSMC_DIR":
                fill_cache(folder)
            return folder
    cached = cache_root() / "nsmc"
    if has_nsmc(cached):
        return cached
    return download_nsmc(cfg.download_url, cached)


def fill_cache(folder: Path) -> None:
    """The first run that finds NSMC through NSMC_DIR (as `make tune` does) copies it into the cache,
    where every later command finds it without NSMC_DIR. Only the complete corpus is copied, each
    file checked and renamed into place whole; a partial copy or a small sample stays where it is."""
    cached = cache_root() / "nsmc"
    if has_nsmc(cached):
        return
    try:
        for name in (TRAIN_FILE, TEST_FILE):
            _check_download(folder / name, name)
    except (OSError, ValueError, UnicodeDecodeError):
        return  # not the whole of NSMC: nothing to cache
    try:
        cached.mkdir(parents=True, exist_ok=True)
        for name in (TRAIN_FILE, TEST_FILE):
            if not (cached / name).is_file():
                with atomic_path(cached / name) as tmp:
                    shutil.copyfile(folder / name, tmp)
    except OSError as err:  # a cache that cannot be written costs nothing but the copy
        log.warning("could not copy NSMC into the cache %s (%s); NSMC_DIR stays needed", cached, err.strerror or err)
        return
    log.info("copied NSMC from NSMC_DIR into %s: later commands find it there without NSMC_DIR", cached)


def download_nsmc(base_url: str, dest: Path, timeout_s: float = 60.0) -> Path:
    """Fetch both files into dest, each through a temp file renamed only once it checks out."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in (TRAIN_FILE, TEST_FILE):
        if (dest / name).is_file():
            continue
        url = f"{base_url.rstrip('/')}/{name}"
        log.info("downloading %s", url)
        try:
            with atomic_path(dest / name) as tmp:  # renamed into place only once it checks out
                with urllib.request.urlopen(url, timeout=timeout_s) as response, open(tmp, "wb") as out:
                    while chunk := response.read(1 << 20):
                        out.write(chunk)
                _check_download(tmp, name)
        except (urllib.error.URLError, OSError, ValueError) as err:
            reason = getattr(err, "reason", None) or err
            raise UserError(
                f"NSMC not found locally and the download from {url} failed ({reason}); {HOW_TO_POINT}"
            ) from None
    return dest


def _check_download(path: Path, name: str) -> None:
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\r\n")
        rows = sum(1 for _ in f)
    if header != HEADER:
        raise ValueError(f"unexpected header {header[:40]!r}")
    if rows != EXPECTED_ROWS[name]:
        raise ValueError(f"{rows} rows, expected {EXPECTED_ROWS[name]}")


def read_reviews(path: Path) -> pd.DataFrame:
    """Parse one NSMC file; bad rows (wrong fields, bad label, not UTF-8) are dropped and counted, and
    more than 1% of them is an error."""
    ids, texts, labels, bad, first_bad = [], [], [], 0, None
    with open(path, "rb") as f:
        _check_header(path, f.readline())
        for lineno, raw in enumerate(f, start=2):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as err:
                bad += 1
                first_bad = first_bad or (lineno, f"not UTF-8 (byte 0x{raw[err.start]:02x})")
                continue
            if len(line) > MAX_REVIEW_CHARS:
                bad += 1
                first_bad = first_bad or (lineno, f"{len(line):,} characters (at most {MAX_REVIEW_CHARS:,})")
                continue
            fields = line.split("\t")
            if not (len(fields) == 3 and fields[1].strip() != "" and fields[2] in ("0", "1")):
                bad += 1
                first_bad = first_bad or (lineno, repr(line[:80]))
                continue
            ids.append(fields[0])
            texts.append(fields[1])
            labels.append(int(fields[2]))
    total = len(texts) + bad
    if total == 0:
        raise UserError(f"{path}: no reviews after the header")
    if bad:
        log.warning("%s: dropped %d bad rows of %d (first: line %d, %s)", path.name, bad, total, *first_bad)
    if bad / total > MAX_BAD_FRACTION:
        raise UserError(
            f"{path}: {bad} of {total} rows are bad (> 1%); first bad row is line {first_bad[0]}: {first_bad[1]}"
        )
    return pd.DataFrame({"id": ids, "document": texts, "label": np.asarray(labels, dtype=np.int64)})


def _check_header(path: Path, raw: bytes) -> None:
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise UserError(f"{path}: the file is UTF-16; NSMC files are UTF-8 (re-save it as UTF-8)")
    header = raw.decode("utf-8", "replace").removeprefix("\ufeff").rstrip("\r\n")
    if header != HEADER:
        raise UserError(f"{path}: line 1 is {header[:60]!r}, expected the NSMC header 'id<TAB>document<TAB>label'")


def fingerprint(paths: list[Path]) -> str:
    """sha256 over the files' bytes: which data a model saw, recorded next to its metrics."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Splits:
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    fingerprint: str
    gate: pd.DataFrame = field(default_factory=lambda: pd.DataFrame({"document": [], "label": []}))
    train_fingerprint: str | None = None
    split: int = SPLIT_VERSION

    def recorded(self) -> dict:
        """What a run records in its data section: the files it read and how it split them."""
        return {"fingerprint": self.fingerprint, "train_fingerprint": self.train_fingerprint, "split": self.split}


def read_train_file(cfg: DataConfig) -> tuple[pd.DataFrame, str, Path]:
    """The whole train file, its sha256 checked against the one the run recorded, and the folder."""
    folder = locate_nsmc(cfg)
    found = fingerprint([folder / TRAIN_FILE])
    if cfg.train_fingerprint is not None and found != cfg.train_fingerprint:
        raise UserError(
            f"{folder / TRAIN_FILE}: changed since the run recorded it (fingerprint {found[:12]}, "
            f"recorded {cfg.train_fingerprint[:12]}); point NSMC_DIR at the data the run used"
        )
    return read_reviews(folder / TRAIN_FILE), found, folder


def load_gate(cfg: DataConfig, others: list[DataConfig] = ()) -> tuple[HeldOut, str]:
    """The gate reviews and the train file's sha256, reading the train file alone: what promotion
    decides on, with the test file never opened. `others` (the version in service) drop every
    gate review they trained on or chose by."""
    full, found, _ = read_train_file(cfg)
    return held_out(cfg, full, list(others)), found


def load_splits(cfg: DataConfig) -> Splits:
    """Train, validation and gate from the train file (model/split.py); the test file only ever reports."""
    full, train_found, folder = read_train_file(cfg)
    test = read_reviews(folder / TEST_FILE)
    if cfg.test_limit is not None and cfg.test_limit < len(test):
        test = test.iloc[stratified_pick(test.label.to_numpy(), cfg.test_limit, cfg.seed)].reset_index(drop=True)
    parts = parts_of(cfg, full)
    found = fingerprint([folder / TRAIN_FILE, folder / TEST_FILE])
    if cfg.fingerprint is not None and found != cfg.fingerprint:
        raise UserError(
            f"{folder}: the NSMC files changed since this run recorded them (fingerprint {found[:12]}, "
            f"recorded {cfg.fingerprint[:12]}); point NSMC_DIR at the data the run used"
        )
    splits = Splits(
        train=full[parts.train].reset_index(drop=True),
        val=full[parts.val].reset_index(drop=True),
        test=test,
        fingerprint=found,
        gate=full[parts.gate].reset_index(drop=True),
        train_fingerprint=train_found,
        split=split_version(cfg),
    )
    check_splits(splits, folder / TRAIN_FILE)
    log.info(
        "data %s: train %d, val %d, gate %d, test %d",
        folder,
        len(splits.train),
        len(splits.val),
        len(splits.gate),
        len(splits.test),
    )
    return splits


MIN_PER_LABEL = 2
DUPLICATE_WARNING = 0.2  # NSMC itself repeats about 2% of its reviews


def check_splits(splits: Splits, train_file: Path) -> None:
    """Refuse what cannot train a classifier (one label, next to no rows); warn on heavy duplication."""
    for name, part in (("train", splits.train), ("validation", splits.val)):
        counts = part.label.value_counts().to_dict()
        if len(part) == 0 or min(counts.get(0, 0), counts.get(1, 0)) < (MIN_PER_LABEL if name == "train" else 1):
            shown = ", ".join(f"{counts.get(i, 0)} {LABEL_NAMES[i]}" for i in (0, 1))
            raise UserError(
                f"{train_file}: the {name} split holds {shown}; a classifier needs both labels "
                f"(check the file's labels, or raise data.limit / data.val_fraction)"
            )
    if splits.test.label.nunique() < 2:
        log.warning(
            "%s: the test reviews hold one label only (%d %s): test accuracy will say nothing about the model",
            train_file.with_name(TEST_FILE).name,
            len(splits.test),
            LABEL_NAMES[int(splits.test.label.iloc[0])] if len(splits.test) else "reviews",
        )
    repeats = int(splits.train.document.duplicated().sum())
    if repeats / len(splits.train) > DUPLICATE_WARNING:
        log.warning(
            "%s: %d of %d train reviews (%.0f%%) repeat an earlier one; metrics will flatter the model",
            train_file.name,
            repeats,
            len(splits.train),
            100 * repeats / len(splits.train),
        )
