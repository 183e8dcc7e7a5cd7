"""Issue 47, item 1: a resume never loses an evaluation. A seeded search, one trial at a time with
ASHA on val_loss, is killed with SIGKILL once k result rows exist, for a sample of k (a quarter and
three quarters of its rows), and resumed; every trial's (iteration, step) rows then equal the
uninterrupted run's. The kill waits for the row count, never for a time. One run of the issue's
reproduction relabelled a trial's rows from (1,20)(2,40)(3,60)(4,80) to (1,20)(2,60)(3,80)(4,100),
and ASHA then stopped another trial two rungs early.

To kill after every row count instead of the sample:
CAVIAR_RESUME_EVERY_ROW=1 pytest tests/code/tuning/test_resume_property.py"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from caviar.experiment.record import load_trials
from tests.code.tuning.tune_runs import TUNE, rows, run_caviar, summary_of, tune_killed_when
from tests.conftest import TINY, tiny_job_yaml

pytestmark = pytest.mark.slow

SPEC = {
    **TUNE,
    "search_space": {**TUNE["search_space"], "train.lr": {"loguniform": [2e-3, 1e-2]}},
    "num_samples": 4,
    "max_concurrent_trials": 1,
    "metric": "val_loss",
    "mode": "min",
    "scheduler": {"type": "asha", "max_t": 4, "grace_period": 1, "reduction_factor": 2},
}
TRAIN = {**TINY["train"], "epochs": 2}  # 4 evaluations a trial
MAX_ROWS = SPEC["num_samples"] * SPEC["scheduler"]["max_t"]  # every trial to max_t
# the suite kills at a sample (a share of the rows); CAVIAR_RESUME_EVERY_ROW=1 kills after every row
EVERY_ROW = os.environ.get("CAVIAR_RESUME_EVERY_ROW") == "1"
KILL_POINTS = list(range(1, MAX_ROWS)) if EVERY_ROW else [0.25, 0.75]


def trial_rows(experiment: Path) -> dict[str, list[tuple[int, int]]]:
    """Each trial's (iteration, step) rows, by its index in the search."""
    out = {}
    for trial in load_trials(experiment):
        history = trial.history
        pairs = zip(history["training_iteration"], history["step"], strict=True) if len(history) else []
        out[trial.trial_id.rsplit("_", 1)[1]] = [(int(i), int(s)) for i, s in pairs]
    return out


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, ray_head) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("whole")
    job = tiny_job_yaml(tmp / "job.yaml", storage=str(tmp / "results"), train=TRAIN, **SPEC)
    summary_of(run_caviar("tune", job, "--name", "whole", "--json", env=ray_head))
    return job, trial_rows(tmp / "results" / "whole")


@pytest.mark.parametrize("kill", KILL_POINTS)  # a share of the rows, or a row count
def test_a_search_killed_after_any_row_resumes_to_the_uninterrupted_rows(kill, uninterrupted, tmp_path, ray_head):
    whole_job, whole = uninterrupted
    total = sum(map(len, whole.values()))
    kill_at = kill if isinstance(kill, int) else max(1, round(kill * total))
    if kill_at >= total:
        pytest.skip(f"the uninterrupted search has {total} rows")
    assert 1 <= kill_at < total, (kill_at, total)
    job = tmp_path / "job.yaml"
    job.write_text(whole_job.read_text().replace(str(whole_job.parent / "results"), str(tmp_path / "results")))
    experiment = tmp_path / "results" / "killed"

    def rows_so_far() -> int:
        return sum(rows(r) for r in experiment.glob("*/result.json"))

    tune_killed_when(job, lambda: rows_so_far() >= kill_at, f"row {kill_at}")
    resumed = run_caviar("resume", experiment, "--json", env=ray_head)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = trial_rows(experiment)
    assert after == whole, json.dumps({"killed_after_rows": kill_at, "resumed": after, "whole": whole})
