"""A resume whose searcher state is older than its experiment state (a kill between Ray's uploads of
the two) goes on from the experiment state, instead of waiting forever (ray_compat/state_snapshot.py)."""

from __future__ import annotations

import contextlib
import pickle
import time

import pytest

from caviar.experiment.record import load_trials
from tests.code.tuning.tune_runs import (
    TUNE,
    rows,
    run_caviar,
    summary_of,
    tune_killed_when,
)
from tests.conftest import TINY, tiny_job_yaml

pytestmark = pytest.mark.slow
SEARCHER_STATE = "basic-variant-state-*.json"  # Ray's BasicVariantGenerator's file (a pickle)


def test_a_searcher_state_older_than_the_trials_resumes_to_the_end(tmp_path, ray_head):
    """One trial at a time: the searcher state saved while the first trial ran counts it live. Put
    back over the newer one after a kill that came once the second trial had reported, it held the
    searcher's one slot for a trial Ray restored as finished, and resume waited for it forever."""
    spec = {**TUNE, "scheduler": {"type": "fifo"}, "num_samples": 3, "max_concurrent_trials": 1}
    job = tiny_job_yaml(tmp_path / "job.yaml", storage=str(tmp_path / "results"), train=TINY["train"], **spec)
    experiment = tmp_path / "results" / "killed"
    stale: dict[str, bytes] = {}

    def first_trial_live_then_second_reported() -> bool:
        for path in experiment.glob(SEARCHER_STATE):
            with contextlib.suppress(OSError, EOFError, pickle.UnpicklingError):  # mid-rename
                data = path.read_bytes()
                if [t.rsplit("_", 1)[1] for t in pickle.loads(data)["_live_trials"]] == ["00000"]:
                    stale[path.name] = data
        return bool(stale) and any(rows(r) for r in experiment.glob("*_00001_*/result.json"))

    tune_killed_when(job, first_trial_live_then_second_reported, "the second trial")
    ((name, older),) = stale.items()
    (experiment / name).write_bytes(older)
    ended = {t.trial_id: len(t.history) for t in load_trials(experiment) if t.status == "TERMINATED"}

    started = time.monotonic()
    summary = summary_of(run_caviar("resume", experiment, "--json", env=ray_head, timeout=180))
    trials = {t.trial_id: t for t in load_trials(experiment)}
    assert len(trials) == 3 and all(t.status == "TERMINATED" for t in trials.values()), (
        {k: t.status for k, t in trials.items()},
        time.monotonic() - started,
    )
    assert all(len(trials[k].history) == rows for k, rows in ended.items()), "a finished trial ran again"
    assert len(summary["trials"]) == 3
