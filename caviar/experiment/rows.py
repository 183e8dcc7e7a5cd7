"""One row per trial, built once: what the leaderboard, report.json and caviar_tune.json all show."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from caviar.experiment.object_store import known_as
from caviar.experiment.record import TrialRecord, folder_bytes
from caviar.experiment.selection import Standing
from caviar.job.schema import JobSpec


@dataclass
class TrialRow:
    trial_id: str
    status: str  # finished, stopped or errored (running, pending, paused before the end)
    evaluations: int
    round: int
    stopped_early: bool
    stopped_by: str | None  # finished, patience, scheduler, budget or error (None: not ended)
    stopped_at_rung: int | None  # the evaluation the scheduler stopped it at
    cut_by_budget: bool
    metric: str  # the job's metric, e.g. val_accuracy: best_metric is best_<metric> in JSON and tables
    best_metric: float | None
    best_evaluation: int | None
    val_accuracy_at_best: float | None
    val_loss_at_best: float | None
    wall_s: float
    cpu_s: float
    gpu_s: float
    checkpoint_bytes: int
    checkpoint: str  # its best checkpoint, "" when none was kept
    metric_low: float | None = None  # best_metric's 95% interval (experiment/intervals.py)
    metric_high: float | None = None
    vs_best: float | None = None  # this trial minus the leader, paired on the same reviews (top K)
    vs_best_low: float | None = None
    vs_best_high: float | None = None
    tied_with_best: bool | None = None  # the paired interval holds 0
    params: dict = field(default_factory=dict)  # sampled values by dotted key
    error: str | None = None
    damaged: str | None = None  # a damaged checkpoint it passed over (the report goes on without it)
    group: str | None = None  # a fused member's group (the Ray trial that trained it with others)
    memory_mb: float | None = None  # a fused member's share of its group's peak memory

    def as_json(self) -> dict:
        """caviar_tune.json's form: params nested under "params", the metric named."""
        row = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in asdict(self).items()}
        row[f"best_{self.metric}"] = row.pop("best_metric")
        row.pop("metric")
        for optional in ("error", "damaged", "group", "memory_mb"):
            if row[optional] is None:
                row.pop(optional)
        return row

    def as_columns(self) -> dict:
        """The leaderboard's form: one column per parameter."""
        row = self.as_json()
        return {
            **{k: v for k, v in row.items() if k != "params"},
            "error": self.error,
            "damaged": self.damaged,
            **({"group": self.group, "memory_mb": self.memory_mb} if self.group else {}),
            **self.params,
        }


def trial_row(trial: TrialRecord, job: JobSpec, standing: Standing | None = None) -> TrialRow:
    best = trial.best_row(job.metric, job.mode)
    wall = float(trial.history.iloc[-1].get("time_total_s", math.nan)) if len(trial.history) else math.nan
    checkpoint = trial.best_checkpoint(job.metric, job.mode)
    return TrialRow(
        trial_id=trial.trial_id,
        status=trial.state,
        evaluations=trial.evaluations,
        round=trial.round,
        stopped_early=trial.stopped_early,
        stopped_by=trial.stopped_by,
        stopped_at_rung=trial.evaluations if trial.stopped_early else None,
        cut_by_budget=trial.cut_by_budget,
        metric=job.metric,
        best_metric=None if best is None else float(best[job.metric]),
        best_evaluation=None if best is None else int(best["training_iteration"]),
        val_accuracy_at_best=None if best is None else float(best["val_accuracy"]),
        val_loss_at_best=None if best is None else float(best["val_loss"]),
        wall_s=wall,
        cpu_s=wall * job.resources_per_trial.cpu,
        gpu_s=wall * job.resources_per_trial.gpu,
        checkpoint_bytes=sum(folder_bytes(c) for c in trial.checkpoints()),
        checkpoint=known_as(checkpoint) if checkpoint else "",
        **_interval_fields(standing),
        params=trial.params,
        error=trial.error,
        damaged="; ".join(trial.damage) or None,
        group=trial.group,
        memory_mb=float(trial.history["memory_share_mb"].max()) if "memory_share_mb" in trial.history else None,
    )


def _interval_fields(standing: Standing | None) -> dict:
    fields = {}
    if standing is not None and standing.interval is not None:
        fields |= {"metric_low": standing.interval.low, "metric_high": standing.interval.high}
    if standing is not None and standing.vs_best is not None:
        diff = standing.vs_best
        fields |= {
            "vs_best": diff.value,
            "vs_best_low": diff.low,
            "vs_best_high": diff.high,
            "tied_with_best": diff.tied,
        }
    return fields
