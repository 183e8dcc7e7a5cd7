"""The user's job again, from the resolved record of a run (caviar_job.json).

A run resolves its job before the first trial: stage 0's folder goes into model.pretrained, the LR
range test's range into search_space.train.lr, and `fuse: auto`'s pilot picks K. The record names
what each stage made under `stages` (stages.pretrained, stages.lr_range, stages.fuse_chosen: keys
only caviar sets). Given back as a job file, the record is what its user wrote: each stage's output
goes back to the stage that makes it, which then runs again, and job/resolved_keys.py drops the keys
only caviar sets. A record written before these keys existed keeps its values as they are.
"""

from __future__ import annotations


def as_written(raw: dict) -> dict:
    """`raw` (a parsed caviar_job.json) with each stage's output taken back out of the job's keys."""
    stages = raw.get("stages")
    if not isinstance(stages, dict):
        return raw
    if stages.get("lr_range") is not None:
        space = raw.get("search_space")
        if isinstance(space, dict):
            space.pop("train.lr", None)
        stages["lr_find"] = True
    if (folder := stages.get("pretrained")) is not None:
        model = raw.get("model")
        if isinstance(model, dict) and model.get("pretrained") == folder:
            model.pop("pretrained")
        stages["pretrain"] = True
    return raw
