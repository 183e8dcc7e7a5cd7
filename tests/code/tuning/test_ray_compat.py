"""Canaries for caviar/tuning/ray_compat/: each fails once Ray changes what a workaround relies on,
so the workaround can be removed (or mended) instead of silently doing nothing."""

from __future__ import annotations

import inspect
import json
import logging
from pathlib import Path

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


def test_scheduler_replay_canary_ray_still_keeps_asha_rungs_and_the_tuners_config_so():
    from ray.tune.impl.tuner_internal import TunerInternal
    from ray.tune.schedulers import AsyncHyperBandScheduler

    scheduler = AsyncHyperBandScheduler(max_t=4, grace_period=1, reduction_factor=2)
    (bracket,) = scheduler._brackets
    assert [m for m, recorded in bracket._rungs] == [4, 2, 1] and all(r == {} for _, r in bracket._rungs)
    assert "self._tune_config = " in inspect.getsource(TunerInternal.__init__)


def _asha_decisions(scheduler, feed: list[tuple[str, int, float]], max_t: int = 4) -> dict[str, int | None]:
    """Feed (trial, iteration, val_accuracy) results in order, as Ray would (nothing more from a
    stopped trial); the iteration each trial was stopped at, None for one that ran to the end."""
    from types import SimpleNamespace

    trials, stopped = {}, {}
    for trial_id, iteration, value in feed:
        if stopped.get(trial_id):
            continue
        if trial_id not in trials:
            trials[trial_id] = SimpleNamespace(trial_id=trial_id)
            scheduler.on_trial_add(None, trials[trial_id])
        result = {"training_iteration": iteration, "val_accuracy": value}
        decision = scheduler.on_trial_result(None, trials[trial_id], result)
        stopped[trial_id] = iteration if decision == "STOP" and iteration < max_t else None
    return stopped


def test_a_resumed_asha_stops_what_the_uninterrupted_run_stopped(tmp_path):
    """Issue 31, item 5: trials one at a time, killed after b's second evaluation. Rebuilt from the
    recorded results, ASHA stops c at its first rung as the uninterrupted run did; with the empty
    rungs Ray restores, c passed that rung."""
    import pandas as pd
    from ray.tune.schedulers import AsyncHyperBandScheduler

    from caviar.experiment.record import TrialRecord
    from caviar.tuning.ray_compat.scheduler_replay import rebuild_rungs

    def asha():
        scheduler = AsyncHyperBandScheduler(max_t=4, grace_period=1, reduction_factor=2)
        scheduler.set_search_properties("val_accuracy", "max")
        return scheduler

    curves = {"a": [0.80, 0.82, 0.84, 0.85], "b": [0.81, 0.83, 0.84, 0.85], "c": [0.55, 0.60, 0.62, 0.63]}
    feed = [(t, i + 1, v) for t, values in curves.items() for i, v in enumerate(values)]
    killed_after = feed.index(("b", 2, 0.83)) + 1
    whole = _asha_decisions(asha(), feed)
    assert whole == {"a": None, "b": None, "c": 1}

    def record(trial_id: str, rows: int) -> TrialRecord:
        history = pd.DataFrame({"training_iteration": range(1, rows + 1), "val_accuracy": curves[trial_id][:rows]})
        return TrialRecord(trial_id, "RUNNING", {}, tmp_path, history, None)

    recorded = [record("a", 4), record("b", 2)]
    forgetful = _asha_decisions(asha(), feed[killed_after:])
    assert forgetful["c"] == 2  # what Ray's restored scheduler did: the defect (a rung too late)
    rebuilt = asha()
    assert rebuild_rungs(rebuilt, recorded, "val_accuracy", "max", "training_iteration") == 5  # a: 3, b: 2
    resumed = _asha_decisions(rebuilt, [("a", 4, 0.85), *feed[killed_after:]])  # a re-adds, as on restore
    assert resumed == whole


class _Trial:
    """Hashable like Ray's Trial (the median rule keys its results by the object)."""

    def __init__(self, trial_id: str):
        self.trial_id = trial_id


class _Controller:
    def get_live_trials(self):
        return []


def _median_decisions(scheduler, feed: list[tuple[str, int, float]], ends: dict[str, int]) -> dict[str, int | None]:
    """As _asha_decisions, for the median rule; a trial's last result (`ends`) completes it, as Ray
    calls on_trial_complete with it."""
    trials, stopped, controller = {}, {}, _Controller()
    for trial_id, iteration, value in feed:
        if stopped.get(trial_id):
            continue
        if trial_id not in trials:
            trials[trial_id] = _Trial(trial_id)
            scheduler.on_trial_add(controller, trials[trial_id])
        result = {"training_iteration": iteration, "val_accuracy": value}
        decision = scheduler.on_trial_result(controller, trials[trial_id], result)
        stopped[trial_id] = iteration if decision == "STOP" else None
        if decision == "STOP" or iteration == ends[trial_id]:
            scheduler.on_trial_complete(controller, trials[trial_id], result)
    return stopped


def test_a_resumed_median_rule_stops_what_the_uninterrupted_run_stopped(tmp_path):
    """Killed after b's second evaluation: the rule rebuilt from the recorded results stops c where
    the uninterrupted run did; the rule Ray restores has no results and stops c two evaluations late."""
    import pandas as pd
    from ray.tune.schedulers import MedianStoppingRule

    from caviar.experiment.record import TrialRecord
    from caviar.tuning.ray_compat.scheduler_replay import rebuild_median

    def median():
        return MedianStoppingRule(
            time_attr="training_iteration", metric="val_accuracy", mode="max", grace_period=1, min_samples_required=1
        )

    curves = {"a": [0.80, 0.82, 0.84, 0.85], "b": [0.81, 0.83, 0.84, 0.85], "c": [0.55, 0.60, 0.62, 0.63]}
    ends = {t: len(v) for t, v in curves.items()}
    feed = [(t, i + 1, v) for t, values in curves.items() for i, v in enumerate(values)]
    killed_after = feed.index(("b", 2, 0.83)) + 1
    whole = _median_decisions(median(), feed, ends)
    assert whole == {"a": None, "b": None, "c": 1}

    def record(trial_id: str, rows: int, status: str) -> TrialRecord:
        history = pd.DataFrame(
            {"training_iteration": range(1, rows + 1), "val_accuracy": curves[trial_id][:rows], "step": range(rows)}
        )
        return TrialRecord(trial_id, status, {}, tmp_path, history, None)

    # a finished; b is live, with no checkpoint kept to resume from: it starts over, so none of its
    # results are put back (it reports them again)
    recorded = [record("a", 4, "TERMINATED"), record("b", 2, "RUNNING")]
    assert _median_decisions(median(), feed[killed_after:], ends)["c"] == 3  # Ray's restored rule: two evaluations late
    rebuilt = median()
    assert rebuild_median(rebuilt, recorded, "val_accuracy", "training_iteration") == 5  # a's 4, and once more
    for trial_id in ("a", "b"):  # Ray re-adds every restored trial before any starts
        rebuilt.on_trial_add(_Controller(), _Trial(trial_id))
    rebuilt_feed = [(t, i, v) for t, i, v in feed if t != "a"]  # b starts over; a does not run again
    assert _median_decisions(rebuilt, rebuilt_feed, ends) == {"b": None, "c": 1}


def test_state_snapshot_canary_rays_save_to_dir_is_the_one_it_replaces():
    """The replacement copies Ray 2.60's save_to_dir; once Ray's changes, the copy must be redone."""
    from ray.tune.execution.tune_controller import TuneController

    from caviar.tuning.ray_compat import state_snapshot

    state_snapshot.install()
    assert TuneController.save_to_dir.caviar_snapshot
    source = inspect.getsource(state_snapshot.RAYS_SAVE_TO_DIR)
    assert "Path(driver_staging_path, self.experiment_state_file_name)" in source and '"w",' in source
    assert '"trial_data": list(self._get_trial_checkpoints().values())' in source
    assert "self._search_alg.save_to_dir(driver_staging_path, session_str=self._session_str)" in source
    assert "self._callbacks.save_to_dir(driver_staging_path, session_str=self._session_str)" in source


def _controller(staging: Path, trials: dict, searcher_state: bytes, callbacks: list | None = None):
    """What save_to_dir reads of a TuneController; its searcher writes `searcher_state` as Ray's does.
    By default a run of caviar's: it carries caviar's TensorBoard callback."""
    from types import SimpleNamespace

    from caviar.tuning.ray_compat.tensorboard import TrialTensorBoard

    callbacks = [TrialTensorBoard(None)] if callbacks is None else callbacks

    def save_searcher(folder, session_str):
        Path(folder, f"basic-variant-state-{session_str}.json").write_bytes(searcher_state)

    return SimpleNamespace(
        _get_trial_checkpoints=lambda: trials,
        __getstate__=lambda: {},
        _start_time=0.0,
        _storage=SimpleNamespace(experiment_driver_staging_path=str(staging)),
        experiment_state_file_name="experiment_state-2026-12-02_10-00-00.json",
        _session_str="2026-12-02_10-00-00",
        _search_alg=SimpleNamespace(save_to_dir=save_searcher),
        _callbacks=SimpleNamespace(save_to_dir=lambda folder, session_str: None, _callbacks=callbacks),
    )


def test_the_experiment_state_lands_whole_or_not_at_all(tmp_path):
    """A write that fails midway (a kill, a full disk) leaves the earlier state file as it was."""
    from ray.tune.execution.tune_controller import TuneController

    from caviar.tuning.ray_compat import state_snapshot

    state_snapshot.install()
    state = tmp_path / "experiment_state-2026-12-02_10-00-00.json"
    state.write_text('{"old": true}')
    controller = _controller(tmp_path, {"t": {"a": 1, (1, 2): 2}}, b"new")  # a tuple key: the dump fails midway
    with pytest.raises(TypeError):
        TuneController.save_to_dir(controller)
    assert state.read_text() == '{"old": true}'
    assert [p.name for p in tmp_path.iterdir()] == [state.name]  # no temporary file left, no searcher file


def test_a_resume_takes_the_searcher_state_saved_with_the_trials(tmp_path):
    """The searcher file in the folder is older (a kill between Ray's uploads), and a later session
    left one of its own but no experiment state: the snapshot's copy is put back, the later one aside."""
    from ray.tune.execution.tune_controller import TuneController

    from caviar.tuning.ray_compat import state_snapshot

    state_snapshot.install()
    TuneController.save_to_dir(_controller(tmp_path, {"t": {"status": "TERMINATED"}}, b"saved with the trials"))
    searcher = tmp_path / "basic-variant-state-2026-12-02_10-00-00.json"
    assert searcher.read_bytes() == b"saved with the trials"  # Ray's own file, as before
    searcher.write_bytes(b"older")
    later = tmp_path / "basic-variant-state-2026-12-02_11-00-00.json"
    later.write_bytes(b"a later session's")

    assert state_snapshot.restore_side_states(tmp_path) == [searcher.name]
    assert searcher.read_bytes() == b"saved with the trials"
    assert not later.exists() and later.with_name(later.name + state_snapshot.SUPERSEDED).read_bytes() == (
        b"a later session's"
    )
    assert state_snapshot.restore_side_states(tmp_path / "nothing-here") == []


def test_search_rng_canary_fused_members_are_the_trials_a_real_search_of_the_seed_draws(tmp_path, ray_head):
    """A real Ray search (Tuner, the job's BasicVariantGenerator, a trainable that only reports) of
    the job's space and seed tries exactly the configurations fusion.sample_members draws with
    ray_compat.search_rng: `fuse: K` and `fuse: 1` try the same."""
    import json
    import subprocess
    import sys

    from caviar.job.loading import load_job
    from caviar.tuning.members.fusion import sample_members
    from tests.code.tuning.tune_runs import TUNE
    from tests.conftest import tiny_job_yaml

    space = {**TUNE["search_space"], "model.dropout": {"choice": [0.0, 0.1, 0.2]}}
    path = tiny_job_yaml(tmp_path / "job.yaml", **{**TUNE, "search_space": space, "num_samples": 5, "seed": 11})
    script = f"""
import json, ray
from ray import tune
from caviar.job.keys import flatten
from caviar.job.loading import load_job
from caviar.tuning.search.schedulers import build_search
from caviar.tuning.search.search_space import param_space
job = load_job({str(path)!r})
ray.init(logging_level="ERROR")
tuner = tune.Tuner(
    lambda config: tune.report({{"x": 1}}),
    param_space=param_space(job),
    tune_config=tune.TuneConfig(num_samples=job.num_samples, search_alg=build_search(job)),
    run_config=tune.RunConfig(storage_path={str(tmp_path / "ray")!r}, name="canary", verbose=0),
)
print(json.dumps([flatten(r.config) for r in tuner.fit()]))
"""
    proc = subprocess.run([sys.executable, "-c", script], env=ray_head, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    searched = json.loads(proc.stdout.strip().splitlines()[-1])
    drawn = sample_members(load_job(path))
    as_text = sorted(json.dumps(m, sort_keys=True) for m in drawn)
    assert sorted(json.dumps(c, sort_keys=True) for c in searched) == as_text
    assert len(set(as_text)) == 5  # five distinct draws, not one repeated


def test_the_snapshot_acts_only_for_caviars_runs(tmp_path, monkeypatch):
    """Issue 50, item 6: the replaced save_to_dir is scoped to caviar's runs; any other Tune run in
    the process gets Ray's own, untouched."""
    from ray.tune.execution.tune_controller import TuneController

    from caviar.tuning.ray_compat import state_snapshot

    state_snapshot.install()
    called = []
    monkeypatch.setattr(state_snapshot, "RAYS_SAVE_TO_DIR", lambda controller: called.append(controller))
    other = _controller(tmp_path / "other", {}, b"x", callbacks=[])
    TuneController.save_to_dir(other)
    assert called == [other] and not (tmp_path / "other").exists()
    ours = _controller(tmp_path / "ours", {}, b"x")
    TuneController.save_to_dir(ours)
    state = json.loads((tmp_path / "ours" / ours.experiment_state_file_name).read_text())
    assert called == [other] and state_snapshot.SIDE_KEY in state


def test_moved_modules_canary_a_tuner_state_naming_the_old_paths_still_loads(tmp_path):
    """An experiment made before tuning/'s modules moved: its tuner.pkl names their old paths. In a
    fresh interpreter, pickle alone cannot find them; the resume check, with the aliases, can."""
    import pickle
    import subprocess
    import sys

    from caviar.ops.disk_guard import DiskGuard
    from caviar.tuning.ray_compat.moved_modules import MOVED
    from caviar.tuning.search.live_lines import LiveLines

    state = {"callbacks": [DiskGuard], "reporter": LiveLines}
    data = pickle.dumps(state, protocol=0)
    for old, new in MOVED.items():
        data = data.replace(f"c{new}\n".encode(), f"c{old}\n".encode())
    assert b"caviar.tuning.disk_guard\n" in data and b"caviar.tuning.live_lines\n" in data
    (tmp_path / "tuner.pkl").write_bytes(data)
    plain = "import pickle, sys; pickle.load(open(sys.argv[1], 'rb'))"
    failed = subprocess.run([sys.executable, "-c", plain, str(tmp_path / "tuner.pkl")], capture_output=True, text=True)
    assert failed.returncode != 0 and "No module named 'caviar.tuning.disk_guard'" in failed.stderr
    checked = "import sys; from caviar.tuning.search.tuner import check_tuner_state; check_tuner_state(sys.argv[1])"
    proc = subprocess.run([sys.executable, "-c", checked, str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_stale_staging_canary_a_trials_driver_files_live_under_the_session_by_timestamp_and_name():
    """stale_staging removes <session>/artifacts/*/<experiment>/ before a resume: Ray must still
    stage a driver's files there, the timestamp first and the experiment's name after it."""
    from ray.train._internal.storage import StorageContext

    source = inspect.getsource(StorageContext)
    assert "_get_ray_train_session_dir(), self._timestamp, self.experiment_dir_name" in source
