"""Job files: YAML laid over the typed defaults, `--set key=value` laid over the YAML, checked strictly.

Every mistake becomes a UserError whose one line names where it came from (the file or --set),
the dotted key, and what is wrong. Input is bounded before it is validated: file size, nesting
depth and the size of the tree once YAML aliases are expanded (an alias bomb is tiny on disk and
huge in memory), and no message ever prints more than a short excerpt of a value.
"""

from __future__ import annotations

import difflib
import logging
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from caviar.job.keys import split_override
from caviar.job.resolved_keys import RECORD_NAME, dropped, refusal, resolved_keys, written
from caviar.job.schema import SCHEDULER_CLASSES, JobSpec
from caviar.job.stage_outputs import as_written
from model.config import FIELD_MARK
from model.errors import UserError, short

log = logging.getLogger("caviar.job")
SET_HELP = "override a job value, e.g. --set train.lr=3e-4 (repeatable; a searched key is then pinned)"
MAX_FILE_BYTES = 1 << 20
MAX_NODES = 100_000  # values in the job once aliases are expanded; a real job has a few hundred
MAX_DEPTH = 20
# --smoke: the job's own model, space and scheduler, shrunk to seconds on 1 CPU (CI runs every shipped
# job this way); the user's --set still comes last, e.g. to point data.dir at a small copy
SMOKE = [
    "num_samples=2",
    "max_concurrent_trials=2",
    "resources_per_trial={cpu: 1, gpu: 0}",
    "train.device=cpu",
    "train.epochs=1",
    "train.max_steps=4",
    "pretrain.max_steps=4",
    "pretrain.batch_size=16",
    "train.num_threads=1",
    "data.limit=400",
    "data.test_limit=100",
    "final.seeds=null",
    "time_budget_s=null",
]


def read_yaml(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such job file{_closest_file(path)}")
    if (size := path.stat().st_size) > MAX_FILE_BYTES:
        raise UserError(f"{path}: {size} bytes; a job file is at most {MAX_FILE_BYTES} bytes")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise UserError(f"{path}: cannot read it as a job file ({err.strerror or err})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise UserError(f"{path}: not UTF-8 (byte 0x{data[err.start]:02x} on line {line}); save it as UTF-8") from None
    raw = parse_yaml(text, str(path))
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"{path}: the top level must be a mapping of keys, got {type(raw).__name__}")
    return raw


def _closest_file(path: Path) -> str:
    """`; did you mean tune_jobs/quickstart.yaml?` from the job files beside where it was looked for."""
    try:
        siblings = [p.name for p in path.parent.iterdir() if p.suffix in (".yaml", ".yml")]
    except OSError:
        return ""
    close = difflib.get_close_matches(path.name, siblings, n=1, cutoff=0.6)
    return f"; did you mean {path.parent / close[0]}?" if close else ""


def parse_yaml(text: str, source: str) -> Any:
    """safe_load (no object tags), then the tree checked for depth and expanded size."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise UserError(f"{source}: {problem}{where}") from None
    except RecursionError:
        raise UserError(f"{source}: nested too deeply (at most {MAX_DEPTH} levels)") from None
    check_bounds(value, source)
    return value


def check_bounds(value: Any, source: str) -> None:
    """Walk the tree as the validator would (aliases expanded), giving up past the limits."""
    stack, nodes = [(value, 1)], 0
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise UserError(f"{source}: more than {MAX_NODES} values once YAML aliases are expanded; not a job file")
        if depth > MAX_DEPTH:
            raise UserError(f"{source}: nested too deeply (at most {MAX_DEPTH} levels)")
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, depth + 1) for child in children)


def apply_override(raw: dict, assignment: str) -> None:
    """`train.lr=3e-4`: the value is parsed as YAML, so numbers, booleans and lists keep their types."""
    key, sep, text = assignment.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UserError(f"--set {assignment}: expected key=value, e.g. --set train.lr=3e-4")
    try:
        value = parse_yaml(text, f"--set {short(assignment)}") if text.strip() else None
    except UserError as err:
        raise UserError(f"--set {short(assignment)}: the value is not valid YAML ({err})") from None
    *parents, leaf = split_override(key)
    node = raw
    for depth, part in enumerate(parents):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"--set {assignment}: {'.'.join(parents[: depth + 1])} is a value, not a section")
        node = child
    node[leaf] = value


def location(first: dict) -> tuple[list[str], str]:
    """(the dotted path of an error, its message). A model validator's "@key: ..." message is about
    that key of its section (model.config.FIELD_MARK)."""
    # pydantic puts the tag of a tagged union (scheduler: {type: asha}) into the location; users never wrote it
    loc = [str(p) for p in first["loc"] if p not in SCHEDULER_CLASSES]
    msg = first["msg"].removeprefix("Value error, ")
    if msg.startswith(FIELD_MARK):
        key, _, msg = msg[len(FIELD_MARK) :].partition(": ")
        loc.append(key)
    return loc, msg


def describe(err: ValidationError, cls: type = JobSpec) -> str:
    """The first error as `dotted.key: what is wrong (got X)`, with a short excerpt of X only."""
    first = err.errors()[0]
    path, msg = location(first)
    loc = ".".join(path)
    if first["type"] == "extra_forbidden":
        return f"{loc}: unknown key{did_you_mean(first['loc'], cls)}"
    msg = short(msg, 300)
    if not loc or msg.startswith(loc + "."):
        loc = ""
    got = first.get("input")
    shown = "" if isinstance(got, dict) or got is None else f" (got {short(repr(got))})"
    return f"{loc}: {msg}{shown}" if loc else f"{msg}{shown}"


def did_you_mean(loc: tuple, cls: type) -> str:
    """`; did you mean num_samples?` for the closest key the section really has. Inside a mapping
    of sections (search_space: {train.lr: {loguniform: ...}}) the key after it names one of them."""
    node: Any = cls
    for part in loc[:-1]:
        if part in SCHEDULER_CLASSES:
            node = SCHEDULER_CLASSES[part]
            continue
        if isinstance(node, tuple):  # the mapping's own key (train.lr): its values are of one model
            node = node[0]
            continue
        field = getattr(node, "model_fields", {}).get(part)
        node = _model_of(getattr(field, "annotation", None))
    keys = list(getattr(node, "model_fields", {}))
    close = difflib.get_close_matches(str(loc[-1]), keys, n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def _model_of(annotation: Any) -> Any:
    """The model a field holds: the class itself, or (class,) for a dict of them."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is dict and len(args) == 2 and _model_of(args[1]) is args[1]:
        return (args[1],)
    return None


def validate(raw: Any, source: str, cls: type = JobSpec, context: dict | None = None, overrides: list[str] = ()):
    """The job, or one UserError naming its source: the file, or the --set at fault among `overrides`."""
    try:
        return cls.model_validate(raw, context=context)
    except ValidationError as err:
        where = _source_of(err, overrides) if overrides else source
        raise UserError(f"{short(where, 200)}: {describe(err, cls)}") from None
    except RecursionError:
        raise UserError(f"{short(source, 200)}: nested too deeply (at most {MAX_DEPTH} levels)") from None


def load_job(
    path: Path, overrides: list[str] | None = None, cls: type = JobSpec, smoke: bool = False, fixed_only: bool = False
) -> Any:
    """The job file, then --smoke's and the user's --set laid over it. `fixed_only` (caviar train,
    pretrain, lr-find): the search space is still checked, but not against the network's shape,
    which only a search could vary."""
    context = {"fixed_only": fixed_only}
    raw, caviars = read_yaml(path), resolved_keys(cls)
    if Path(path).name == RECORD_NAME:  # an experiment's record given back as a job: resolved again
        raw = dropped(as_written(raw), caviars)
    elif found := written(raw, caviars):
        raise UserError(f"{path}: {refusal(found[0])}")
    job = validate(raw, str(path), cls, context)  # the file alone first: its own faults are named by the file
    user = list(overrides or [])
    overrides = [*(SMOKE if smoke else []), *user]
    if not overrides:
        return job
    for assignment in user:
        if (key := assignment.partition("=")[0].strip()) in caviars or key.startswith(tuple(k + "." for k in caviars)):
            raise UserError(f"--set {short(assignment)}: {refusal(key)}")
    for assignment in overrides:
        apply_override(raw, assignment)
    pinned = pin_searched(raw, user)
    job = validate(raw, "--set", cls, context, overrides)
    if not fixed_only:  # caviar train and its kind never search: nothing to say
        for key in pinned:
            log.info("%s pinned at %s (removed from search_space)", key, short(repr(_value_at(job, key)), 60))
    return job


def pin_searched(raw: dict, assignments: list[str]) -> list[str]:
    """A `--set` on a key the search space samples pins it: the key leaves the search space, so the
    value given is the value every trial trains with (else the search would silently overwrite it)."""
    space = raw.get("search_space")
    if not isinstance(space, dict):
        return []
    pinned = []
    for assignment in assignments:
        key = assignment.partition("=")[0].strip()
        if key in space and not key.startswith("search_space."):
            del space[key]
            pinned.append(key)
    return pinned


def _value_at(job: BaseModel, dotted: str):
    """The validated value (YAML reads `3e-4` as a string; the schema made it a float)."""
    node: Any = job.model_dump()
    for part in split_override(dotted):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _source_of(err: ValidationError, overrides: list[str]) -> str:
    """The --set the first error is about (the last one that touches its key). The file alone was
    valid, so an error no single --set touches (a rule across keys) comes from them together."""
    loc, _ = location(err.errors()[0])
    for assignment in reversed(overrides):
        key = split_override(assignment.partition("=")[0].strip())
        shared = min(len(key), len(loc))
        if shared and key[:shared] == loc[:shared]:
            return f"--set {short(assignment)}"
    return short("--set " + " ".join(overrides), 200)
