"""Canaries for caviar/tuning/ray_compat/: each fails once Ray changes what a workaround relies on,
so the workaround can be removed (or mended) instead of silently doing nothing."""

from __future__ import annotations

import inspect
import logging

import pytest


def test_resume_repair_canary_ray_still_snapshots_the_experiment_state_on_a_timer():
    from ray.tune.execution import experiment_state

    source = inspect.getsource(experiment_state)
    assert "_checkpoint_period" in source and "10.0" in source, "the state snapshot is no longer throttled"


def test_time_budget_canary_stop_all_still_gets_no_trials():
    from ray.tune.stopper import Stopper, TimeoutStopper

    for cls in (Stopper, TimeoutStopper):
        assert list(inspect.signature(cls.stop_all).parameters) == ["self"], "stop_all now receives trials"


def test_tensorboard_canary_ray_writes_hparams_only_at_trial_end():
    from ray.tune.experiment.trial import Trial
    from ray.tune.logger import TBXLoggerCallback

    assert "hparam" not in inspect.getsource(TBXLoggerCallback.log_trial_start).lower()
    assert "hparam" in inspect.getsource(TBXLoggerCallback).lower()
    assert callable(getattr(Trial, "init_local_path", None)) and isinstance(Trial.local_path, property)


def test_progress_canary_the_lines_it_drops_still_come_from_where_it_expects():
    from ray import tune
    from ray.tune import progress_reporter
    from ray.tune import tune as tune_module

    from caviar.tuning.ray_compat.progress import LOGDIR_LINE, RAY_TUNE_LOGGER, RESUME_HINT

    assert callable(getattr(tune.CLIReporter, "_progress_str", None))
    assert LOGDIR_LINE in inspect.getsource(progress_reporter)
    assert RESUME_HINT in inspect.getsource(tune_module) and tune_module.logger.name == RAY_TUNE_LOGGER
    from ray.tune.execution import tune_controller

    from caviar.tuning.ray_compat.progress import RAY_CONTROLLER_LOGGER, TRIAL_FAILED

    assert TRIAL_FAILED in inspect.getsource(tune_controller) and tune_controller.logger.name == RAY_CONTROLLER_LOGGER


def test_progress_drops_rays_resume_hint_and_shortens_a_full_disk_and_keeps_the_rest():
    from caviar.tuning.ray_compat.progress import RAY_CONTROLLER_LOGGER, RAY_TUNE_LOGGER, trim_ray_logs

    class Keep(logging.Handler):
        def __init__(self):
            super().__init__()
            self.seen = []

        def emit(self, record):
            self.seen.append(record.getMessage())

    trim_ray_logs()
    trim_ray_logs()  # idempotent
    logger, controller, kept = logging.getLogger(RAY_TUNE_LOGGER), logging.getLogger(RAY_CONTROLLER_LOGGER), Keep()
    logger.addHandler(kept)  # Ray's loggers may not propagate to the root, where caplog listens
    controller.addHandler(kept)
    try:
        logger.warning("Experiment has been interrupted.\nResume experiment with: Tuner.restore(path=...)")
        logger.warning("Total run time: 3.00 seconds")
        for failure in (OSError(28, "No space left on device"), ValueError("a real bug")):
            try:
                raise RuntimeError("task failed") from failure
            except RuntimeError:
                controller.exception("Trial task failed for trial %s", "t_00001")
    finally:
        logger.removeHandler(kept)
        controller.removeHandler(kept)
    assert kept.seen == [
        "Total run time: 3.00 seconds",
        "Trial task failed for trial t_00001: no space left on the device",
        "Trial task failed for trial t_00001",  # any other failure keeps its traceback
    ]


def test_working_dir_canary_ray_still_names_the_folder_so():
    from ray._private.runtime_env import working_dir

    from caviar.tuning.ray_compat.working_dir import RAY_WORKING_DIR_FOLDER

    assert f'"{RAY_WORKING_DIR_FOLDER}"' in inspect.getsource(working_dir)


def test_atomic_storage_canary_ray_still_stages_through_pyarrow_copy_files():
    from ray.train._internal import storage

    assert "pyarrow.fs.copy_files" in inspect.getsource(storage)


def test_connection_canary_the_address_lookup_is_still_there():
    from ray._private.services import get_ray_address_from_environment

    assert list(inspect.signature(get_ray_address_from_environment).parameters) == ["addr", "temp_dir"]


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("127.0.0.1:1", "no Ray cluster answers at 127.0.0.1:1"),
        ("ray://127.0.0.1:1", "no Ray cluster answers at 127.0.0.1:1"),
        ("nonsense", "expected host:port"),
    ],
)
def test_an_address_that_does_not_answer_is_one_line(address, message, monkeypatch):
    from caviar.tuning.ray_compat.connection import check_reachable
    from model.errors import UserError

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(UserError, match=message):
        check_reachable(address)
