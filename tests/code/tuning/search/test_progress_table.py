"""The live table with finished trials that never reported the metric (a time budget can cut them
before their first report): Ray's own sort raises on them, caviar's reporter lists them last. And
a run leaves Ray Tune's global verbosity, which decides whether the table prints, as it found it."""

from __future__ import annotations

import contextlib
import copy
import inspect

import pytest


@pytest.fixture(scope="module")
def finished_trials(tmp_path_factory):
    """Four TERMINATED trials; t0 and t2 never reported val_accuracy. A trial's folder paths need a
    running Ray (its session folder), so one is started, in process, for the module. Ray prints the
    table only above a global verbosity: Ray's default is set here, whatever ran before."""
    import ray
    from ray.train._internal.storage import StorageContext
    from ray.tune.experiment.trial import Trial
    from ray.tune.utils import log

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    verbosity = log.verbosity
    log.set_verbosity(log.Verbosity.V3_TRIAL_DETAILS)  # Ray's default
    storage = StorageContext(storage_path=str(tmp_path_factory.mktemp("storage")), experiment_dir_name="x")
    trials = []
    for i, accuracy in enumerate([None, 0.7, None, 0.9]):
        trial = Trial("run_trial", config={"train": {"lr": 0.001 * (i + 1)}}, stub=True, trial_id=f"t{i}")
        trial.storage = copy.copy(storage)
        trial.storage.trial_dir_name = f"t{i}"
        trial.status = Trial.TERMINATED
        reported = {} if accuracy is None else {"val_accuracy": accuracy}
        trial.run_metadata.last_result = {"config": trial.config, **reported}
        trials.append(trial)
    yield trials
    log.set_verbosity(verbosity)
    ray.shutdown()


def test_canary_rays_own_sort_still_fails_on_a_trial_without_the_metric(finished_trials):
    """Once this fails, Ray sorts such trials itself: quiet_reporter's own sort can go."""
    from ray import tune

    reporter = tune.CLIReporter(metric_columns={"val_accuracy": "acc"}, sort_by_metric=True)
    reporter.set_search_properties("val_accuracy", "max")
    with pytest.raises(TypeError, match="not supported between instances"):
        reporter._progress_str(finished_trials, True)


def test_the_table_lists_the_finished_trials_best_first_and_the_unreported_last(finished_trials):
    from caviar.tuning.ray_compat.progress import quiet_reporter

    reporter = quiet_reporter({"val_accuracy": "acc"}, {"train/lr": "train.lr"})
    reporter.set_search_properties("val_accuracy", "max")
    rows = [
        ln
        for ln in reporter._progress_str(finished_trials, True).splitlines()
        if ln.startswith("|") and "TERMINATED" in ln
    ]
    assert [row.split()[1] for row in rows] == ["run_trial_t3", "run_trial_t1", "run_trial_t0", "run_trial_t2"]
    assert reporter._sort_by_metric, "the reporter's own setting is left as it was"


def test_verbosity_canary_tune_run_still_sets_the_global_verbosity():
    """Once this fails, Ray no longer changes its global verbosity per run: progress.fit can be plain."""
    from ray.tune import tune as tune_module

    assert "set_verbosity(verbose)" in inspect.getsource(tune_module.run)


@pytest.mark.parametrize("fails", [False, True], ids=["ends", "raises"])
def test_fit_puts_the_callers_verbosity_back(fails):
    """A fit that lowers the verbosity (as tune.run does for verbose=1) leaves it as it was, even one
    that raises."""
    from ray.tune.utils import log

    from caviar.tuning.ray_compat.progress import fit

    class Tuner:
        def fit(self):
            log.set_verbosity(0)
            if fails:
                raise RuntimeError("the run failed")
            return "results"

    kept = log.verbosity
    log.set_verbosity(log.Verbosity.V2_TRIAL_NORM)
    try:
        with pytest.raises(RuntimeError) if fails else contextlib.nullcontext():
            assert fit(Tuner()) == "results"
        assert log.verbosity == log.Verbosity.V2_TRIAL_NORM
    finally:
        log.set_verbosity(kept)
