"""Ray's saved state is code: `caviar resume` lets Ray unpickle tuner.pkl and the experiment state's
pickled fields (every trial's storage, checkpoint manager and results; the searcher's files ride
inside it too, state_snapshot.py). A folder copied from a colleague or a bucket could run anything
(issue 47, item 5: a tuner.pkl whose __reduce__ ran os.system).

So every experiment state caviar saves carries an HMAC, under a key of the user's kept outside
every experiment, over the state and the sha256 of tuner.pkl; resume checks both before anything is
unpickled, and refuses, in one line, a state it did not sign. `caviar resume --trust-state` signs a
state the user vouches for, after which it resumes as any other.

The key: CAVIAR_STATE_KEY (hex, for a team or a cluster whose drivers run on several machines),
else $XDG_CONFIG_HOME/caviar/state.key (~/.config), made on first use, readable by the user alone.
Upstream: none filed (Ray's restore unpickles by design). Canary: state_snapshot's, whose save this
signs.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path

from caviar.experiment.layout import RAY_TUNER_STATE
from model.errors import UserError, short
from model.files import atomic_path, file_sha256
from model.settings import settings

SIGNATURE = "caviar_signature"  # in the experiment state: {"hmac": hex, "tuner_pkl_sha256": hex | None}
KEY_FILE = "state.key"


def state_key() -> bytes:
    """CAVIAR_STATE_KEY, else the user's key file, made once (two first uses agree: a hard link
    never replaces an existing file)."""
    chosen = settings()
    if chosen.state_key:
        try:
            return bytes.fromhex(chosen.state_key)
        except ValueError:
            raise UserError(
                "CAVIAR_STATE_KEY: not hex; make one with: python -c 'import secrets; print(secrets.token_hex(32))'"
            ) from None
    path = chosen.config_home / "caviar" / KEY_FILE
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(secrets.token_hex(32) + "\n")
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
        tmp.unlink(missing_ok=True)
    try:
        return bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: the key that signs experiments cannot be read ({short(str(err), 80)})") from None


def signed(state: dict, tuner_sha256: str | None) -> dict:
    """The state (as JSON values) with caviar's signature added."""
    return {**state, SIGNATURE: {"hmac": _mac(state, tuner_sha256), "tuner_pkl_sha256": tuner_sha256}}


def _mac(state: dict, tuner_sha256: str | None) -> str:
    body = {k: v for k, v in state.items() if k != SIGNATURE}
    canonical = json.dumps([body, tuner_sha256], sort_keys=True, separators=(",", ":"))
    return hmac.new(state_key(), canonical.encode(), hashlib.sha256).hexdigest()


def tuner_digest(folder: Path) -> str | None:
    path = Path(folder) / RAY_TUNER_STATE
    return file_sha256(path) if path.is_file() else None


def check_signed(folder: Path, state_file: Path | None) -> None:
    """The experiment state and tuner.pkl are what caviar signed with this user's key; else one
    line, before anything in them is unpickled."""
    if state_file is None:
        return  # no state: Ray's own check says so
    state = _read(state_file)
    found = state.get(SIGNATURE)
    again = f"if you trust where it came from: caviar resume --trust-state {folder}"
    if not isinstance(found, dict) or not isinstance(found.get("hmac"), str):
        raise UserError(
            f"{state_file}: not signed by caviar (made elsewhere, or by a caviar that did not sign yet); "
            f"resuming unpickles code from it, so nothing was run; {again}"
        )
    tuner = found.get("tuner_pkl_sha256")
    if not hmac.compare_digest(found["hmac"], _mac(state, tuner if isinstance(tuner, str) else None)):
        raise UserError(
            f"{state_file}: its signature does not match (altered, or signed with another key than "
            f"{_key_source()}); resuming unpickles code from it, so nothing was run; {again}"
        )
    if tuner != tuner_digest(folder):
        raise UserError(
            f"{Path(folder) / RAY_TUNER_STATE}: not the file caviar recorded with the experiment state "
            f"(its sha256 differs); resuming unpickles it, so nothing was run; {again}"
        )


def trust(folder: Path, state_file: Path | None) -> None:
    """--trust-state: sign the state as it is, with this user's key."""
    if state_file is None:
        return
    state = _read(state_file)
    with atomic_path(state_file) as tmp:
        tmp.write_text(json.dumps(signed(state, tuner_digest(folder))), encoding="utf-8")


def _read(state_file: Path) -> dict:
    try:
        state = json.loads(Path(state_file).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserError(f"{state_file}: Ray's experiment state cannot be read ({short(str(err), 120)})") from None
    if not isinstance(state, dict):
        raise UserError(f"{state_file}: Ray's experiment state cannot be read (not a JSON object)")
    return state


def _key_source() -> str:
    chosen = settings()
    return "CAVIAR_STATE_KEY" if chosen.state_key else str(chosen.config_home / "caviar" / KEY_FILE)
