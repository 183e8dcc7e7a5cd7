"""The keys only caviar sets: what a run resolved before its first trial (the data's fingerprints,
stage 0's folder for each pretraining setting). They live in the resolved record an experiment
keeps (caviar_job.json), never in a job a user writes: docs/jobs.md leaves them out, and a job
file or a --set that names one is refused in one line. caviar's own record, given back as a job
file, has them dropped: the run resolves them again."""

from __future__ import annotations

from pydantic import BaseModel

SET_BY_CAVIAR = "set_by_caviar"  # the json_schema_extra marker on such a field (model/config.py, schema.py)
RECORD_NAME = "caviar_job.json"  # the resolved record's file name (experiment/layout.py's JOB_FILE)


def is_resolved(field) -> bool:
    extra = field.json_schema_extra
    return isinstance(extra, dict) and bool(extra.get(SET_BY_CAVIAR))


def resolved_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key of `model` whose field is set by caviar, sections included."""
    found = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        if is_resolved(field):
            found.append(key)
        elif isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            found += resolved_keys(field.annotation, key + ".")
    return found


def written(raw: dict, keys: list[str]) -> list[str]:
    """The keys among `keys` that the raw job (parsed YAML) holds."""
    present = []
    for key in keys:
        node = raw
        for part in key.split("."):
            node = node.get(part, None) if isinstance(node, dict) else None
        if node is not None:
            present.append(key)
    return present


def dropped(raw: dict, keys: list[str]) -> dict:
    """The raw job less those keys (caviar's own record, used again as a job file)."""
    for key in written(raw, keys):
        *parents, leaf = key.split(".")
        node = raw
        for part in parents:
            node = node[part]
        del node[leaf]
    return raw


def refusal(key: str) -> str:
    return f"{key} is set by caviar when the job runs (an experiment records it in {RECORD_NAME}); remove it"
