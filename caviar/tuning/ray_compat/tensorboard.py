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


class TrialTensorBoard(TBXLoggerCallback):
    def __init__(self, local_experiment_dir: Path | None):
        super().__init__()
        # Local storage: write straight into results/<experiment>/<trial>/ so `tensorboard --logdir`
        # sees running trials now; remote storage: Ray's staging folder, which it syncs up.
        self.local_experiment_dir = local_experiment_dir
        self._writers: dict = {}

    def _folder(self, trial) -> str:
        if self.local_experiment_dir is None:
            trial.init_local_path()
            return trial.local_path
        folder = self.local_experiment_dir / Path(trial.path).name
        folder.mkdir(parents=True, exist_ok=True)
        return str(folder)

    def log_trial_start(self, trial) -> None:
        if trial in self._writers:
            self._writers[trial].close()
        writer = SummaryWriter(self._folder(trial), flush_secs=10)
        experiment, session_start, _ = hparams(hparam_values(trial.config), {m: 0.0 for m in HPARAM_METRICS})
        writer.file_writer.add_summary(experiment)
        writer.file_writer.add_summary(session_start)
        writer.flush()
        self._writers[trial] = writer

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        if trial not in self._writers:
            self.log_trial_start(trial)
        writer = self._writers[trial]
        step = result.get("training_iteration", iteration)
        for key in SCALARS:
            if isinstance(result.get(key), numbers.Number):
                writer.add_scalar(key, result[key], global_step=step)
        writer.flush()

    def log_trial_end(self, trial, failed: bool = False) -> None:
        writer = self._writers.pop(trial, None)
        if writer is None:
            return
        _, _, session_end = hparams(hparam_values(trial.config), {m: 0.0 for m in HPARAM_METRICS})
        writer.file_writer.add_summary(session_end)
        writer.close()
