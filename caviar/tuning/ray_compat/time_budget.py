"""A job's time budget (`time_budget_s`), and a record of the trials it cut.

Ray's own budget stops every live trial when the clock runs out, and those trials then look just
like the ones a scheduler stopped: TERMINATED before their own end. So a search cut by its budget
would report its cut trials as "stopped early by ASHA". This stopper keeps Ray's clock (it is Ray's
TimeoutStopper) and, the moment it fires, writes the trials it cuts to <experiment>/caviar_budget.json,
which experiment/record.py reads back (TrialRecord.cut_by_budget).

Upstream: none filed. Ray's Stopper.stop_all() is given no trials, and a resumed run's stopper is
restored from the saved state as a copy apart from the callbacks; the canary in test_ray_compat
checks stop_all still takes no trial list.
"""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path

from ray.tune import Callback
from ray.tune.stopper import TimeoutStopper

from caviar.experiment.layout import BUDGET_FILE
from caviar.experiment.record import trials_cut
from model.files import write_json_atomically

ENDED = ("TERMINATED", "ERROR")
log = logging.getLogger("caviar.tune")
_LIVE_TRIALS: dict[str, list] = {}  # TimeBudget.token -> the running Tune controller's trial list


class TimeBudget(TimeoutStopper, Callback):
    """Both the run's stopper and one of its callbacks: as a callback it sees the controller's live
    trial list at the start of every step, and as the stopper it names the trials still live when
    the budget runs out (Ray stops them right after, in the same step).

    Ray does not keep the two roles in one object: a resumed run's stopper is restored from the
    saved experiment state, a copy apart from the callback. So the callback shares the trial list
    through a module-level table, under a token every copy carries."""

    def __init__(self, seconds: float, local: bool):
        TimeoutStopper.__init__(self, seconds)
        self.local = local  # remote storage (s3://...): nothing to write to on this machine
        self.token = uuid.uuid4().hex
        self._recorded = False

    def on_step_begin(self, iteration: int, trials: list, **info) -> None:
        _LIVE_TRIALS[self.token] = trials

    def on_experiment_end(self, trials: list, **info) -> None:
        _LIVE_TRIALS.pop(self.token, None)

    def stop_all(self) -> bool:
        fired = super().stop_all()
        trials = _LIVE_TRIALS.get(self.token)
        if fired and not self._recorded and self.local and trials:
            self._recorded = True
            # the experiment folder as this run's trials know it: right also for a resumed, moved one
            folder = Path(trials[0].remote_experiment_path)
            try:
                record_cut(folder, self._timeout_seconds, [t.trial_id for t in trials if t.status not in ENDED])
            except (OSError, ValueError) as err:  # a record, never a reason to break the run
                log.warning("could not record the trials the time budget cut in %s: %s", folder, err)
        return fired


def record_cut(folder: Path, seconds: float, cut: list[str]) -> None:
    """Add to the record: a resumed run that runs out again cuts more trials."""
    cut_before = trials_cut(folder)
    record = {"time_budget_s": seconds, "cut_at": time.time(), "cut": sorted({*cut_before, *cut})}
    write_json_atomically(Path(folder) / BUDGET_FILE, record)
