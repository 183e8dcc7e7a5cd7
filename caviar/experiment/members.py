"""A fused trial's members read back as trials: each has its own rows, checkpoints and configuration
in <trial>/members/<member id>/ (tuning/members/fused_trial.py writes them), so the leaderboard, the
outcome, promote and serve treat a member like any trial, with its group named beside it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from caviar.experiment.layout import MEMBER_FILE, MEMBERS_DIR
from caviar.experiment.trial_record import TrialRecord, folder_bytes
from model.errors import UserError, short
from model.files import read_json_object


def members_of(trial: TrialRecord) -> list[TrialRecord]:
    """A fused trial's members as trials (their own rows, checkpoints and configuration), or the
    trial itself when it is not fused."""
    folder = trial.path / MEMBERS_DIR
    if not folder.is_dir():
        return [trial]
    found = []
    for member_dir in sorted(p for p in folder.iterdir() if (p / MEMBER_FILE).is_file()):
        try:
            member = read_json_object(member_dir / MEMBER_FILE)
            rows = [json.loads(line) for line in (member_dir / "result.json").read_text().splitlines() if line.strip()]
        except (UserError, OSError, ValueError) as err:
            trial.damage.append(f"{member_dir}: {short(err, 120)}")
            continue
        ended = member.get("status") in ("STOPPED", "FINISHED")
        found.append(
            TrialRecord(
                trial_id=str(member.get("member", member_dir.name)),
                status="TERMINATED" if ended else trial.status,
                params=dict(member.get("params") or {}),
                path=member_dir,
                history=pd.DataFrame(rows),
                error=trial.error,
                round=trial.round,
                cut_by_budget=trial.cut_by_budget and not ended,
                group=trial.trial_id,
            )
        )
    return found


def drop_group_checkpoints(experiment_dir: Path) -> int:
    """Bytes freed by removing the fused groups' own checkpoints (the stack and optimizer, only for
    resuming a group) once every member of the group has ended; members keep their best."""
    freed = 0
    for members in Path(experiment_dir).glob(f"*/{MEMBERS_DIR}"):
        try:
            statuses = [read_json_object(f).get("status") for f in members.glob(f"*/{MEMBER_FILE}")]
        except UserError:
            continue
        if statuses and all(s in ("STOPPED", "FINISHED") for s in statuses):
            for checkpoint in members.parent.glob("checkpoint_*"):
                freed += folder_bytes(checkpoint)
                shutil.rmtree(checkpoint, ignore_errors=True)
    return freed
