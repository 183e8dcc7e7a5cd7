"""Ray's console output, trimmed to what a caviar user acts on.

- The live table prints `Result logdir: /tmp/ray/session_.../driver_artifacts`, Ray's scratch copy,
  not where results go (caviar prints the experiment folder). Overrides CLIReporter._progress_str,
  a private method. Upstream: none filed.
- An interrupted run logs `Resume experiment with: Tuner.restore(...)` from ray.tune.tune; caviar
  prints its own `caviar resume <experiment>` line instead. A logging filter on that logger drops
  Ray's line. Upstream: none filed.
Canaries: test_ray_compat checks both lines still come from where these expect them.
"""

from __future__ import annotations

import logging

RAY_TUNE_LOGGER = "ray.tune.tune"
RESUME_HINT = "Resume experiment with:"
LOGDIR_LINE = "Result logdir:"


def quiet_reporter(metric_columns: dict, parameter_columns: dict):
    from ray import tune

    class QuietReporter(tune.CLIReporter):
        def _progress_str(self, *args, **kwargs) -> str:
            text = super()._progress_str(*args, **kwargs)
            return "\n".join(line for line in text.split("\n") if not line.startswith(LOGDIR_LINE))

    return QuietReporter(
        metric_columns=metric_columns,
        parameter_columns=parameter_columns,
        max_report_frequency=15,
        sort_by_metric=True,  # metric and mode come from TuneConfig
    )


class _DropResumeHint(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return RESUME_HINT not in record.getMessage()


_FILTER = _DropResumeHint()


def drop_ray_resume_hint() -> None:
    """Idempotent: the filter is added once per process."""
    logger = logging.getLogger(RAY_TUNE_LOGGER)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
