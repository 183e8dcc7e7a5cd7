"""Pretraining settings as a search dimension: `search_space: {pretrain.objective: {choice: [mlm, electra]}}`.

Stage 0 pretrains once per distinct setting (each cached under its own key, tuning/stages/pretrain_stage.py)
and the resolved job records each setting's folder (`stages.pretrained_by`). A trial's sampled
pretrain values then pick its folder as its model.pretrained (`lay_over`, which
tuning/search/search_space.py's trial_config applies), so every trial fine-tunes the weights of the setting
it drew, and the leaderboard shows that setting among the trial's values. Only discrete values
(choice or grid) can be searched: each one is a pretraining run.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from pydantic import ValidationError

from model.config import PretrainConfig
from model.errors import short

PREFIX = "pretrain."
PRETRAINED_BY = "pretrained_by"  # the key a trial's base config carries the folders under


def searched(space: dict) -> dict:
    return {k: d for k, d in space.items() if k.startswith(PREFIX)}


def check(job) -> None:
    """One ValueError naming the first searched pretrain key the job cannot search."""
    for key, dist in searched(job.search_space).items():
        where, leaf = f"search_space.{key}", key.removeprefix(PREFIX)
        if not (job.stages.pretrain or job.stages.pretrained_by):
            raise ValueError(f"{where}: pretraining is searched only with model.pretrained: {{from_pretrain: true}}")
        if leaf not in PretrainConfig.model_fields or leaf in ("log_every", "precision"):
            raise ValueError(f"{where}: not a pretraining setting that decides the weights")
        if dist.kind not in ("choice", "grid"):
            raise ValueError(f"{where}: give choice or grid values: each one is a pretraining run")
        for value in dist.args:
            try:
                PretrainConfig.model_validate({**job.pretrain.model_dump(), leaf: value})
            except ValidationError as err:
                raise ValueError(f"{where}: value {short(repr(value))}: {short(err.errors()[0]['msg'], 200)}") from None


def settings(job) -> list[dict[str, Any]]:
    """Every distinct combination of the searched pretrain values (dotted keys); [{}] when none."""
    space = searched(job.search_space)
    return [dict(zip(space, values, strict=True)) for values in itertools.product(*(d.args for d in space.values()))]


def setting_key(values: dict) -> str:
    return json.dumps({k: values[k] for k in sorted(values)}, sort_keys=True)


def applied(job, values: dict):
    """The job with one setting's pretrain values fixed (what stage 0 pretrains for that setting)."""
    return job.model_copy(
        update={"pretrain": job.pretrain.model_copy(update={k.removeprefix(PREFIX): v for k, v in values.items()})}
    )


def lay_over(merged: dict, sampled: dict) -> dict:
    """`sampled` without its pretrain values, and `merged` (a trial's base) with model.pretrained set to
    the folder of the setting they name; `merged` loses the folder table, which TrialConfig has no place for."""
    by_setting = merged.pop(PRETRAINED_BY, None)
    chosen = {k: v for k, v in sampled.items() if k.startswith(PREFIX)}
    if chosen:
        merged["model"]["pretrained"] = by_setting[setting_key(chosen)]
    return {k: v for k, v in sampled.items() if not k.startswith(PREFIX)}
