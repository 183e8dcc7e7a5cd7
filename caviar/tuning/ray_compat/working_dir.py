"""Inside a Ray job, the driver's working folder can vanish under it.

Upstream: ray-project/ray#52343 (Tune in a job submitted with JobSubmissionClient fails in the
uploaded working_dir). The runtime-env agent replaces the job's working_dir with a fresh copy when
workers start on this node, which deletes the driver's cwd under it (os.getcwd() then fails inside
Ray Tune). Imports are unaffected: sys.path holds the absolute path, which the copy re-creates.
The cwd is recognised by Ray's folder name for it, `working_dir_files` (ray._private.runtime_env.
working_dir); the canary in test_ray_compat checks that name.
"""

from __future__ import annotations

import os
import tempfile

RAY_WORKING_DIR_FOLDER = "working_dir_files"


def leave_job_working_dir() -> None:
    """Inside a Ray job, work from a folder that stays. Call it once the job is resolved: its data and
    storage paths are absolute by then, so nothing relative is read after the move."""
    try:
        cwd = os.getcwd()
    except FileNotFoundError:
        cwd = None
    if cwd is None or RAY_WORKING_DIR_FOLDER in cwd:
        os.chdir(tempfile.gettempdir())
