"""Ray's console output, trimmed to what a caviar user acts on.

- The live table prints `Result logdir: /tmp/ray/session_.../driver_artifacts`, Ray's scratch copy,
  not where results go (caviar prints the experiment folder). Overrides CLIReporter._progress_str,
  a private method. Upstream: none filed.
- An interrupted run logs `Resume experiment with: Tuner.restore(...)` from ray.tune.tune; caviar
  prints its own `caviar resume <experiment>` line instead. A logging filter on that logger drops
  Ray's line. Upstream: none filed.
- A trial that fails on a full disk logs `Trial task failed for trial ...` with 60 lines of
  traceback from ray.tune.execution.tune_controller; caviar shortens that record to one line (the
  run then ends with caviar's own line about the disk). Upstream: none filed.
- Sorting the finished trials by the metric, Ray compares the value of a trial that never reported
  it (None) with the others' and raises TypeError, so a run whose time budget cut two trials
  before their first report crashed in its last progress print. The reporter sorts them itself,
  unreported last, and hands Ray that order with its sort off. Upstream: none filed.
- tune.run sets Ray Tune's global verbosity from RunConfig.verbose and never sets it back, so after
  an in-process `caviar tune` (verbose=1) the caller's own Ray Tune runs printed no live table.
  `fit` puts the caller's verbosity back. Upstream: none filed.
Canaries: test_ray_compat checks these lines still come from where these expect them.
"""

from __future__ import annotations

import logging

from model.files import is_out_of_space

RAY_TUNE_LOGGER = "ray.tune.tune"
RAY_CONTROLLER_LOGGER = "ray.tune.execution.tune_controller"
TRIAL_FAILED = "Trial task failed for trial"
RESUME_HINT = "Resume experiment with:"
LOGDIR_LINE = "Result logdir:"


def fit(tuner):
    """tuner.fit(), leaving Ray Tune's global verbosity as the caller had it."""
    from ray.tune.utils import log

    kept = log.verbosity
    try:
        return tuner.fit()
    finally:
        log.set_verbosity(kept)


def quiet_reporter(metric_columns: dict, parameter_columns: dict):
    from ray import tune

    class QuietReporter(tune.CLIReporter):
        def _progress_str(self, trials, *args, **kwargs) -> str:
            sort, self._sort_by_metric = self._sort_by_metric, False
            try:
                if sort and self._metric and self._mode:
                    trials = finished_last_by_metric(trials, self._metric, self._mode)
                text = super()._progress_str(trials, *args, **kwargs)
            finally:
                self._sort_by_metric = sort
            return "\n".join(line for line in text.split("\n") if not line.startswith(LOGDIR_LINE))

    return QuietReporter(
        metric_columns=metric_columns,
        parameter_columns=parameter_columns,
        max_report_frequency=15,
        sort_by_metric=True,  # metric and mode come from TuneConfig
    )


def finished_last_by_metric(trials: list, metric: str, mode: str) -> list:
    """The trials in their order, the finished ones after the rest, best first by `metric` and
    those that never reported it last (Ray's table keeps this order within each state)."""
    from ray.tune.utils import unflattened_lookup

    def rank(trial) -> tuple[bool, float]:
        value = unflattened_lookup(metric, trial.last_result, default=None)
        if value is None:
            return True, 0.0
        return False, -value if mode == "max" else value

    finished = [t for t in trials if t.status == "TERMINATED"]
    return [t for t in trials if t.status != "TERMINATED"] + sorted(finished, key=rank)


class _DropResumeHint(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return RESUME_HINT not in record.getMessage()


class _ShortenOutOfSpace(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and TRIAL_FAILED in record.getMessage() and is_out_of_space(record.exc_info[1]):
            record.msg, record.args = f"{record.getMessage()}: no space left on the device", ()
            record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


_FILTERS = {RAY_TUNE_LOGGER: _DropResumeHint(), RAY_CONTROLLER_LOGGER: _ShortenOutOfSpace()}


def trim_ray_logs() -> None:
    """Idempotent: each filter is added once per process."""
    for name, log_filter in _FILTERS.items():
        logger = logging.getLogger(name)
        if log_filter not in logger.filters:
            logger.addFilter(log_filter)
