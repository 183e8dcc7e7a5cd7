"""Room on disk for a run: what a run needs free, checked before anything is written. The watch
while trials run is ops/disk_guard.py.

A tune on a full disk used to end in 280 lines of ENOSPC tracebacks from tensorboardX and pyarrow,
and one started on a full disk failed writing caviar_job.json. Now a run that cannot fit one more
checkpoint does not start, and a running one stops while there is still room for Ray to save its
state, with one line that says how to continue.
"""

from __future__ import annotations

import os

from caviar.job.schema import JobSpec
from model.network import TRAINING_BYTES_PER_PARAMETER, parameter_count

MIB = 2**20
FILES_PER_CHECKPOINT = 4 * MIB  # tokenizer, configs, caviar.json, the TensorBoard events beside it
STATE_RESERVE = 16 * MIB  # Ray's experiment state and result files


def checkpoint_bytes(job: JobSpec) -> int:
    """One checkpoint: fp32 weights and AdamW's two moments (3 of the 4 training copies), and files."""
    params = 0 if job.model.pretrained else parameter_count(job.model)
    return params * TRAINING_BYTES_PER_PARAMETER * 3 // 4 + FILES_PER_CHECKPOINT


def concurrent_trials(job: JobSpec) -> int:
    per_trial = max(job.resources_per_trial.cpu, 1e-3)
    return job.max_concurrent_trials or max(1, int((os.cpu_count() or 1) // per_trial))


def reserve_bytes(job: JobSpec) -> int:
    """What must stay free while trials run: a checkpoint for each running trial, and Ray's state."""
    return STATE_RESERVE + concurrent_trials(job) * checkpoint_bytes(job)


def room_for_search(job: JobSpec) -> int:
    """Free space a search needs to start: the reserve it keeps, and one more checkpoint."""
    return reserve_bytes(job) + checkpoint_bytes(job)


def room_for_single(job: JobSpec) -> int:
    """Free space one run without Ray needs: its checkpoint, the one on its way, and logs."""
    return STATE_RESERVE + 2 * checkpoint_bytes(job)
