"""A resumed experiment starts with no driver files an earlier driver left in this Ray session.

Ray's JSON and CSV loggers append to each trial's result.json and progress.csv in the driver's
staging folder, <session>/artifacts/<timestamp>/<experiment>/, and upload that folder to the
experiment. The timestamp is the one the trials' pickled storage keeps: a driver resuming in the same
Ray session (a cluster that outlived the first driver) writes into the first driver's folder, and its
files are still there. Ray replaces a trial's file with the experiment's copy only when the trial has
a checkpoint; otherwise, and in its first upload, the stale copy goes back over the experiment's.
The store-outage test read iterations [1, 1, 2, ...] (3 of 3 runs in isolation, once in CI): the
stale file held the row resume_repair had cut, and the trial reported it again.

So before Ray restores, those folders go: the experiment's own files are the only history.
Upstream: none filed. Canary: test_ray_compat checks the staging folder is still under the session's
artifacts, named by the experiment.
"""

from __future__ import annotations

import shutil
from pathlib import Path


def forget_earlier_drivers(experiment_name: str) -> list[Path]:
    """Remove this experiment's driver staging folders in the current Ray session; returns them."""
    from ray.train.constants import _get_ray_train_session_dir

    stale = sorted(p for p in Path(_get_ray_train_session_dir()).glob(f"*/{experiment_name}") if p.is_dir())
    for folder in stale:
        shutil.rmtree(folder, ignore_errors=True)
    return stale
