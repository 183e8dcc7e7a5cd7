"""One trial read back from its folder: its status, values, history and checkpoints, and why it ended.

caviar/experiment/record.py reads an experiment's trials into these; a fused trial's members are
read into them too (members.py), so every reader treats a member like any trial.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from caviar.experiment.layout import GROUP_STEP
from caviar.experiment.object_store import left_out_bytes
from model.checkpoint import META
from model.errors import UserError
from model.files import read_json_object

# A driver stopped by Ctrl+C or a kill leaves RUNNING/PENDING trials behind; a run that ended does not
# (synchronous HyperBand may leave the trials it stopped PAUSED).
UNFINISHED = ("RUNNING", "PENDING")
# What `caviar resume` runs again (Ray's resume_unfinished and resume_errored): an errored trial
# restarts from its checkpoint just as an interrupted one does.
RESUMED = (*UNFINISHED, "ERROR")


@dataclass
class TrialRecord:
    trial_id: str
    status: str  # TERMINATED, ERROR, RUNNING/PENDING/PAUSED (interrupted)
    params: dict  # sampled values by dotted key, e.g. {"train.lr": 3e-4}
    path: Path
    history: pd.DataFrame  # one row per evaluation
    error: str | None
    round: int = 1
    resume_from: Path | None = None  # the checkpoint Ray's saved state would restore this trial from
    cut_by_budget: bool = False  # still live when the job's time_budget_s ran out
    max_t: int | None = None  # the scheduler's last rung: a trial that reached it was not stopped early
    damage: list[str] = field(default_factory=list)  # one line per damaged checkpoint passed over
    group: str | None = None  # a fused member's group: the Ray trial that trained it (tuning/members/fused_trial.py)

    @property
    def evaluations(self) -> int:
        return len(self.history)

    @property
    def finished_naturally(self) -> bool:
        """Its own last evaluation (end of training or patience); Ray's `done` is set either way."""
        return bool(len(self.history)) and bool(self.history.iloc[-1].get("done_training", False))

    @property
    def stopped_early(self) -> bool:
        """Stopped by the scheduler (ASHA, median rule...): terminated before its own end, and not by
        the clock (a trial the time budget cut ends TERMINATED too)."""
        reached_max_t = self.max_t is not None and self.evaluations >= self.max_t
        return (
            self.status in ("TERMINATED", "PAUSED")
            and not self.finished_naturally
            and not self.cut_by_budget
            and not reached_max_t
        )

    @property
    def stopped_by(self) -> str | None:
        """Why it ended (why_ended), or error; None while it has not ended."""
        if self.status == "ERROR":
            return "error"
        if not self.cut_by_budget and self.status not in ("TERMINATED", "PAUSED"):  # HyperBand ends PAUSED
            return None
        last = self.history.iloc[-1] if len(self.history) else {}
        return why_ended(last, self.evaluations, self.max_t, self.cut_by_budget)

    @property
    def state(self) -> str:
        """finished, stopped (by the scheduler, patience or the budget) or errored; Ray's own status,
        lower-cased, for a trial that has not ended (running, pending, paused)."""
        ended = {"finished": "finished", "error": "errored", None: self.status.lower()}
        return ended.get(self.stopped_by, "stopped")

    def best_row(self, metric: str, mode: str) -> pd.Series | None:
        if metric not in self.history or self.history[metric].isna().all():
            return None
        index = self.history[metric].idxmax() if mode == "max" else self.history[metric].idxmin()
        return self.history.loc[index]

    @property
    def resume_step(self) -> int | None:
        """Where a resumed trial (interrupted or errored) starts: its checkpoint's step (a fused
        group's too), 0 without one (it starts over). None where every recorded row stands: a trial
        that finished, or a checkpoint that names no step."""
        if self.status not in RESUMED:
            return None
        if self.resume_from is None:
            return 0
        step = self.checkpoint_metrics(self.resume_from).get("step")
        if step is None and (self.resume_from / GROUP_STEP).is_file():
            step = read_json_object(self.resume_from / GROUP_STEP).get("step")
        return int(step) if isinstance(step, int | float) and not isinstance(step, bool) else None

    def replayed(self, columns: tuple[str, ...], resume_step: int | None = None) -> pd.DataFrame:
        """The rows a scheduler saw and will not see again, with `columns` present: all of an ended
        trial's, a live one's up to the checkpoint it resumes from. A fused member passes its group's
        `resume_step`: its rows can run ahead of the group's checkpoint."""
        if not all(c in self.history for c in columns):
            return self.history.iloc[:0]
        step = resume_step if self.group is not None else self.resume_step
        return up_to_step(self.history, step).dropna(subset=list(columns))

    def checkpoints(self) -> list[Path]:
        return sorted(p for p in self.path.glob("checkpoint_*") if p.is_dir())

    def checkpoint_metrics(self, folder: Path) -> dict:
        """The metrics a checkpoint saved; a damaged caviar.json is passed over and noted in `damage`,
        so the rest of the experiment still reports."""
        meta = folder / META
        if not meta.is_file():
            return {}
        try:
            metrics = read_json_object(meta).get("metrics")
        except UserError as err:
            metrics = None
            if str(err) not in self.damage:
                self.damage.append(str(err))
        return metrics if isinstance(metrics, dict) else {}

    def best_checkpoint(self, metric: str, mode: str) -> Path | None:
        scored = [(self.checkpoint_metrics(c).get(metric), c) for c in self.checkpoints()]
        scored = [(m, c) for m, c in scored if isinstance(m, int | float) and not isinstance(m, bool)]
        if not scored:
            return None
        pick = max if mode == "max" else min
        return pick(scored, key=lambda mc: mc[0])[1]


def up_to_step(history: pd.DataFrame, step: int | None) -> pd.DataFrame:
    """The rows recorded at or before `step` (None: all): the one cut a resume makes, for the
    scheduler's replay and for the histories rewritten to end at a checkpoint alike."""
    if step is None:
        return history
    if step <= 0 or "step" not in history:  # 0: starting over (no evaluation comes before a step)
        return history if step > 0 else history.iloc[:0]
    return history[~(history["step"] > step)].reset_index(drop=True)


def why_ended(last, evaluations: int, max_t: int | None, cut_by_budget: bool) -> str:
    """Why a trial that ended did: budget, patience, finished (its own end, or the scheduler's last
    rung) or scheduler, from its last report. The one rule: the records and the live view use it."""
    if cut_by_budget:
        return "budget"
    if last.get("done_training", False):
        return "patience" if last.get("stopped_by_patience", False) else "finished"
    return "finished" if max_t is not None and evaluations >= max_t else "scheduler"


def folder_bytes(folder: Path) -> int:
    """Its files' bytes, with those a mirror of an experiment on object storage left there."""
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file()) + left_out_bytes(folder)
