"""TensorBoard per trial: scalars under caviar's metric names, and the HParams entry at trial START.

Ray's TBXLoggerCallback writes hparams only when a trial ends, so running trials are missing from
the HParams table exactly while one wants to compare them. Subclassing it also stops Ray from
adding its own TensorBoard logger beside this one. With remote storage it writes into Ray's
staging folder through the private Trial.init_local_path() and Trial.local_path.

Upstream: none filed. Canary: test_ray_compat checks that Ray's own log_trial_start still writes no
HParams and that Trial.init_local_path exists.
"""

from __future__ import annotations

import numbers
from pathlib import Path

from ray.tune.logger import TBXLoggerCallback
from tensorboardX import SummaryWriter
from tensorboardX.summary import hparams

from caviar.job.keys import flatten
from caviar.tuning.members.fusion import GROUP_KEY
from model.config import METRICS

SCALARS = (*METRICS, "lr", "examples_per_s", "epoch")
HPARAM_METRICS = METRICS


def hparam_values(config: dict) -> dict:
    """TensorBoard takes numbers, strings and booleans; lists become their text."""
    return {
        k: v if isinstance(v, numbers.Number | str | bool) else str(v)
        for k, v in flatten(config).items()
        if v is not None
    }


class RunBoard:
    """One run's TensorBoard: its HParams entry when it starts, scalars at each result, the end."""

    def __init__(self, folder: str, config: dict):
        self.config = config
        self.writer = SummaryWriter(folder, flush_secs=10)
        experiment, session_start, _ = hparams(hparam_values(config), {m: 0.0 for m in HPARAM_METRICS})
        self.writer.file_writer.add_summary(experiment)
        self.writer.file_writer.add_summary(session_start)
        self.writer.flush()

    def add(self, result: dict, step: int) -> None:
        for key in SCALARS:
            if isinstance(result.get(key), numbers.Number):
                self.writer.add_scalar(key, result[key], global_step=step)
        self.writer.flush()

    def close(self) -> None:
        _, _, session_end = hparams(hparam_values(self.config), {m: 0.0 for m in HPARAM_METRICS})
        self.writer.file_writer.add_summary(session_end)
        self.writer.close()


class TrialTensorBoard(TBXLoggerCallback):
    def __init__(self, local_experiment_dir: Path | None):
        super().__init__()
        # Local storage: write straight into results/<experiment>/<trial>/ so `tensorboard --logdir`
        # sees running trials now; remote storage: Ray's staging folder, which it syncs up.
        self.local_experiment_dir = local_experiment_dir
        self._boards: dict = {}

    def _folder(self, trial) -> str:
        if self.local_experiment_dir is None:
            trial.init_local_path()
            return trial.local_path
        folder = self.local_experiment_dir / Path(trial.path).name
        folder.mkdir(parents=True, exist_ok=True)
        return str(folder)

    def log_trial_start(self, trial) -> None:
        if GROUP_KEY in trial.config:
            return  # a fused group: each of its members writes its own run (tuning/members/fused_trial.py)
        if trial in self._boards:
            self._boards[trial].writer.close()
        self._boards[trial] = RunBoard(self._folder(trial), trial.config)

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        if GROUP_KEY in trial.config:
            return
        if trial not in self._boards:
            self.log_trial_start(trial)
        self._boards[trial].add(result, result.get("training_iteration", iteration))

    def log_trial_end(self, trial, failed: bool = False) -> None:
        board = self._boards.pop(trial, None)
        if board is not None:
            board.close()
