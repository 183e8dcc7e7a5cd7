"""Issue 47, item 5: `caviar resume` unpickles nothing caviar did not sign. A tuner.pkl, an
experiment state or a searcher file planted in an experiment folder (whose unpickling would create a
marker file) is refused in one line and the marker is never made; `--trust-state` signs a state the
user vouches for."""

from __future__ import annotations

import base64
import json
import pickle
import shutil
from pathlib import Path

import pytest

from caviar.tuning.ray_compat.state_signature import SIGNATURE, state_key
from caviar.tuning.ray_compat.state_snapshot import SIDE_KEY, newest_state
from caviar.tuning.search.tuner import check_tuner_state, trust_saved_state
from model.errors import UserError

pytestmark = pytest.mark.slow


class Planted:
    """Unpickled, it opens (creates) the marker file: what os.system would do, without a shell."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def copy(experiment, tmp_path) -> Path:
    return Path(shutil.copytree(experiment, tmp_path / "experiment"))


def _state(copy: Path) -> tuple[Path, dict]:
    path = newest_state(copy)
    return path, json.loads(path.read_text())


def _refused(cli, copy: Path, marker: Path, says: str) -> None:
    proc = cli("resume", copy)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and says in lines[0], proc.stderr[-2000:]
    assert lines[0].endswith(f"caviar resume --trust-state {copy}")
    assert not marker.exists(), "the planted pickle ran"


def test_a_planted_tuner_pickle_is_refused_and_never_runs(cli, copy, tmp_path):
    marker = tmp_path / "ran"
    (copy / "tuner.pkl").write_bytes(pickle.dumps(Planted(marker)))
    _refused(cli, copy, marker, "tuner.pkl: not the file caviar recorded with the experiment state")


def test_a_planted_searcher_file_or_pickled_field_breaks_the_signature(cli, copy, tmp_path):
    marker = tmp_path / "ran"
    path, state = _state(copy)
    name = next(iter(state[SIDE_KEY]["files"]))  # the searcher's file, restored from the state on resume
    state[SIDE_KEY]["files"][name] = base64.b64encode(pickle.dumps(Planted(marker))).decode()
    path.write_text(json.dumps(state))
    _refused(cli, copy, marker, "its signature does not match")

    state.pop(SIGNATURE)  # a state from elsewhere, never signed
    path.write_text(json.dumps(state))
    _refused(cli, copy, marker, "not signed by caviar")


def test_trust_state_signs_a_state_the_user_vouches_for(copy):
    path, state = _state(copy)
    state.pop(SIGNATURE)
    path.write_text(json.dumps(state))
    with pytest.raises(UserError, match="not signed by caviar"):
        check_tuner_state(copy)
    assert trust_saved_state(copy) == [str(path)]
    check_tuner_state(copy)  # signed with this user's key: resumes as any other


def test_the_key_is_made_once_for_the_user_alone(tmp_path, monkeypatch):
    monkeypatch.delenv("CAVIAR_STATE_KEY")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    first = state_key()
    path = tmp_path / "caviar" / "state.key"
    assert len(first) == 32 and path.stat().st_mode & 0o777 == 0o600
    assert state_key() == first and list(path.parent.iterdir()) == [path]
    monkeypatch.setenv("CAVIAR_STATE_KEY", "not hex")
    with pytest.raises(UserError, match="CAVIAR_STATE_KEY: not hex"):
        state_key()
