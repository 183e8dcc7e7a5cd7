"""reseed.json read into ReseedRecord and written back unchanged, older and newer records included."""

from __future__ import annotations

import copy

from caviar.experiment.reseed_record import ReseedRecord

RUN = {
    "seed": 1001,
    "val": 0.8,
    "val_accuracy": 0.8,
    "test_accuracy": 0.79,
    "test_f1": 0.78,
    "test_metrics": {"accuracy": 0.79},
    "checkpoint": "s3://caviar/exp/e/reseed/config-1/t/checkpoint_000001",
    "parameters": 1000,
    "steps": 40,
}
CONFIG = {
    "rank": 1,
    "source_trial": "a_00000",
    "params": {"train.lr": 0.001},
    "runs": [RUN],
    "parameters": 1000,
    "steps": 40,
    "val_mean": 0.8,
    "val_std": 0.0,
    "test_mean": 0.79,
    "test_std": 0.0,
}
VERSUS = {"difference": -0.01, "interval": [-0.03, 0.01], "n": 96, "separated": False}
SECOND = {**CONFIG, "rank": 2, "vs_leader": VERSUS}
RECORD = {
    "seeds": 2,
    "top_k": 2,
    "picked": "the top 2 by val_accuracy",
    "metric": "val_accuracy",
    "configs": [CONFIG, SECOND],
    "leader_rank": 1,
    "chosen_rank": 2,
    "chosen_because": "configurations 1, 2 are not separated",
    "best_run": RUN,
}


def test_a_record_reads_into_fields_and_writes_back_as_it_was():
    record = ReseedRecord.from_json(copy.deepcopy(RECORD))
    assert record.chosen.rank == 2 and record.chosen.vs_leader.separated is False
    assert record.best_run.checkpoint.startswith("s3://") and record.configs[0].vs_leader is None
    assert record.as_json() == RECORD
    assert record.describe()[-1].startswith("chosen: config 2: configurations 1, 2 are not separated")


def test_an_older_record_without_the_reason_and_a_newer_one_with_more_keys_both_load():
    older = {k: v for k, v in RECORD.items() if k != "chosen_because"}
    assert ReseedRecord.from_json(older).chosen_because is None
    newer = {**RECORD, "written_by": "caviar 0.2"}
    assert ReseedRecord.from_json(newer).as_json() == newer  # what it does not read, it keeps
