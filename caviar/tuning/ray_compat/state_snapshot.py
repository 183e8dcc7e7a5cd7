"""Ray's experiment state and its searcher's state, saved as one snapshot and resumed as one.

Ray 2.60's TuneController.save_to_dir writes experiment_state-*.json (every trial's status) and,
beside it, the search algorithm's and the callbacks' own files into a staging folder, which a
background thread then uploads to the experiment folder file by file. A driver killed between two
of those uploads left the two states from different instants. With `max_concurrent_trials`, the
searcher counts its live trials: one that had finished by the experiment state's instant was still
live in the older searcher state, nothing ever completed it again, and `caviar resume` waited
forever for a free slot (seen in 2 of 4 CI runs; in 1 of 15 runs of the two kill tests under
load, the driver idling in TuneController._update_trial_queue with no trial pending or running).
The other order loses a trial: the searcher had made it, the experiment state never recorded it.

So every searcher and callback file also travels inside the experiment state file (one atomic
write, one atomic upload), and `restore_side_states` puts those copies back before Ray resumes.
The state file itself is written by rename: written in place, a kill mid-write left it empty.

Ray offers no hook for this, so TuneController.save_to_dir is replaced on the class, once per
process; the replacement acts only for caviar's own runs, those that carry caviar's TensorBoard
callback (every caviar experiment, new or resumed), and calls Ray's own for any other Tune run in
the process. Upstream: none filed. Canary: test_ray_compat checks Ray's save_to_dir is still the one copied here.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
from pathlib import Path

from caviar.experiment.layout import RAY_TUNER_STATE
from caviar.tuning.ray_compat.state_signature import signed
from caviar.tuning.ray_compat.tensorboard import TrialTensorBoard
from model.files import atomic_path

SIDE_KEY = "caviar_side_states"  # {"session": str, "files": {name: base64 bytes}}
SUPERSEDED = ".superseded"  # a side file newer than the snapshot, renamed so Ray's globs skip it
RAYS_SAVE_TO_DIR = None  # Ray's own, once replaced (the canary reads its source)


def install() -> None:
    """Replace TuneController.save_to_dir with one that snapshots the side states with the trials."""
    from ray.tune.execution.tune_controller import TuneController

    global RAYS_SAVE_TO_DIR
    if getattr(TuneController.save_to_dir, "caviar_snapshot", False):
        return
    RAYS_SAVE_TO_DIR = TuneController.save_to_dir
    TuneController.save_to_dir = _save_to_dir


def is_caviars(controller) -> bool:
    """A Tune run that caviar started: its callbacks hold caviar's TensorBoard callback."""
    return any(isinstance(c, TrialTensorBoard) for c in getattr(controller._callbacks, "_callbacks", []))


def _save_to_dir(self) -> None:
    """Ray 2.60's save_to_dir, with the side files saved first and embedded in the state file; Ray's
    own for a run that is not caviar's."""
    from ray.tune.utils.serialization import TuneFunctionEncoder

    if not is_caviars(self):
        return RAYS_SAVE_TO_DIR(self)
    staging = Path(self._storage.experiment_driver_staging_path)
    staging.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="caviar-side-") as scratch:
        self._search_alg.save_to_dir(scratch, session_str=self._session_str)
        self._callbacks.save_to_dir(scratch, session_str=self._session_str)
        side = {p.name: p.read_bytes() for p in sorted(Path(scratch).iterdir()) if p.is_file()}
    state = {
        "trial_data": list(self._get_trial_checkpoints().values()),
        "runner_data": self.__getstate__(),
        "stats": {"start_time": self._start_time},
        SIDE_KEY: {
            "session": self._session_str,
            "files": {name: base64.b64encode(data).decode() for name, data in side.items()},
        },
    }
    encoded = json.loads(json.dumps(state, cls=TuneFunctionEncoder))  # as resume will read it back
    with atomic_path(staging / self.experiment_state_file_name) as tmp, open(tmp, "w") as f:
        json.dump(signed(encoded, _tuner_sha256(self)), f)  # resume runs no pickle caviar did not sign
    for name, data in side.items():  # the files Ray reads on resume, as before
        with atomic_path(staging / name) as tmp:
            tmp.write_bytes(data)


_save_to_dir.caviar_snapshot = True


def _tuner_sha256(controller) -> str | None:
    """tuner.pkl's sha256, read once a run from the storage Ray wrote it to (before the run began)."""
    if not hasattr(controller, "_caviar_tuner_sha256"):
        try:
            storage = controller._storage
            path = f"{storage.experiment_fs_path}/{RAY_TUNER_STATE}"
            with storage.storage_filesystem.open_input_file(path) as file:
                controller._caviar_tuner_sha256 = hashlib.sha256(file.readall()).hexdigest()
        except (AttributeError, OSError):  # no tuner.pkl (a bare controller): the state alone is signed
            controller._caviar_tuner_sha256 = None
    return controller._caviar_tuner_sha256


def newest_state(folder: Path) -> Path | None:
    """The experiment state file Ray resumes from: the newest by name."""
    from ray.tune.execution.experiment_state import _find_newest_experiment_checkpoint

    newest = _find_newest_experiment_checkpoint(str(folder))
    return None if newest is None else Path(newest)


def restore_side_states(folder: Path) -> list[str]:
    """Write the newest experiment state's searcher and callback files into a local experiment folder,
    over whatever a kill left there; a side file named after a later session (made after that
    snapshot) is renamed aside. Returns the names written; none for a state saved without them."""
    newest = newest_state(folder)
    if newest is None:
        return []
    with open(newest, encoding="utf-8") as f:
        snapshot = json.load(f).get(SIDE_KEY)
    if not snapshot:
        return []
    session = snapshot["session"]
    for name, encoded in snapshot["files"].items():
        pattern = name.replace(session, "*")
        for later in folder.glob(pattern):
            if later.name > name:  # Ray takes the greatest name matching the pattern
                os.replace(later, later.with_name(later.name + SUPERSEDED))
        with atomic_path(folder / name) as tmp:
            tmp.write_bytes(base64.b64decode(encoded))
    return sorted(snapshot["files"])
