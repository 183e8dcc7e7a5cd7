"""Job files: YAML laid over the typed defaults, `--set key=value` laid over the YAML, checked strictly.

Every mistake becomes a UserError whose one line names where it came from (the file or --set),
the dotted key, and what is wrong.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from caviar.spec import SCHEDULER_TYPES, JobSpec
from model.errors import UserError

SET_HELP = "override a job value, e.g. --set train.lr=3e-4 (repeatable)"


def read_yaml(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such job file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise UserError(f"{path}: {problem}{where}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"{path}: the top level must be a mapping of keys, got {type(raw).__name__}")
    return raw


def apply_override(raw: dict, assignment: str) -> None:
    """`train.lr=3e-4`: the value is parsed as YAML, so numbers, booleans and lists keep their types."""
    key, sep, text = assignment.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UserError(f"--set {assignment}: expected key=value, e.g. --set train.lr=3e-4")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        raise UserError(f"--set {assignment}: the value is not valid YAML") from None
    *parents, leaf = key.split(".")
    node = raw
    for depth, part in enumerate(parents):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"--set {assignment}: {'.'.join(parents[: depth + 1])} is a value, not a section")
        node = child
    node[leaf] = value


def describe(err: ValidationError) -> str:
    """The first error as `dotted.key: what is wrong (got X)`."""
    first = err.errors()[0]
    # pydantic puts the tag of a tagged union (scheduler: {type: asha}) into the location; users never wrote it
    loc = ".".join(str(p) for p in first["loc"] if p not in SCHEDULER_TYPES)
    if first["type"] == "extra_forbidden":
        return f"{loc}: unknown key"
    msg = first["msg"].removeprefix("Value error, ")
    if not loc or msg.startswith(loc + "."):
        loc = ""
    got = first.get("input")
    shown = "" if isinstance(got, dict) or got is None else f" (got {got!r})"
    return f"{loc}: {msg}{shown}" if loc else f"{msg}{shown}"


def validate(raw: dict, source: str, cls: type = JobSpec):
    try:
        return cls.model_validate(raw)
    except ValidationError as err:
        raise UserError(f"{source}: {describe(err)}") from None


def load_job(path: Path, overrides: list[str] | None = None, cls: type = JobSpec) -> Any:
    raw = read_yaml(path)
    job = validate(raw, str(path), cls)
    if not overrides:
        return job
    for assignment in overrides:
        apply_override(raw, assignment)
    return validate(raw, "--set " + " ".join(overrides), cls)
