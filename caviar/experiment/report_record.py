"""report.json as a typed record: an experiment's best trial, its leaderboard rows, the importance
of each searched key, and the files `caviar report` wrote. experiment/report.py makes it; the
command line and bench/storage.py read its fields."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class BestTrial:
    """The trial that validation ranks first, with its best evaluation's value and interval."""

    trial_id: str
    params: dict[str, Any]
    value: float | None  # the job's metric at its best evaluation (keyed by the metric's name in JSON)
    evaluation: int | None
    checkpoint: str | None
    interval: list[float] | None  # 95% on the validation split
    tied_with_best: list[str] = field(default_factory=list)
    test_accuracy: float | None = None  # --evaluate-top: reported, never used to choose

    def as_json(self, metric: str) -> dict:
        out = {"trial_id": self.trial_id, "params": self.params, metric: self.value, "evaluation": self.evaluation}
        out |= {"checkpoint": self.checkpoint, "interval": self.interval, "tied_with_best": self.tied_with_best}
        return out | ({"test_accuracy": self.test_accuracy} if self.test_accuracy is not None else {})

    @classmethod
    def from_json(cls, raw: dict, metric: str) -> BestTrial:
        fields = ("trial_id", "params", "evaluation", "checkpoint", "interval", "tied_with_best", "test_accuracy")
        return cls(value=raw.get(metric), **{k: raw.get(k) for k in fields if k in raw})


@dataclass
class Report:
    experiment_dir: str  # as the user knows it: a path, or its URI on object storage
    job: str
    metric: str
    mode: str
    best: BestTrial
    trials: list[dict]  # the leaderboard's rows, its columns as written to leaderboard.csv
    importance: dict
    files: list[str]  # written in the experiment folder
    notes: list[str] = field(default_factory=list)  # damaged checkpoints, trials with none left to score

    def as_json(self) -> dict:
        head = {"experiment_dir": self.experiment_dir, "job": self.job, "metric": self.metric, "mode": self.mode}
        return head | {
            "best": self.best.as_json(self.metric),
            "trials": self.trials,
            "importance": self.importance,
            "files": self.files,
            "notes": self.notes,
        }

    @classmethod
    def from_json(cls, raw: dict) -> Report:
        """A report.json; newer keys are passed over."""
        metric = raw["metric"]
        keys = ("experiment_dir", "job", "mode", "trials", "importance", "files", "notes")
        return cls(
            metric=metric, best=BestTrial.from_json(raw["best"], metric), **{k: raw[k] for k in keys if k in raw}
        )


@dataclass
class ShownReport:
    """What `caviar report` prints besides the record: the top of the leaderboard and one line on
    which searched keys mattered."""

    record: Report
    table: str
    importance_line: str
