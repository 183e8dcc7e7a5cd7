"""Dotted keys, the one way a job names a value: `train.lr` is section `train`, leaf `lr`.

Search spaces, PBT mutations, `--set`, sampled trial configs and seed re-runs all name values so;
this module splits, sets, nests and flattens them, and nothing else does.
"""

from __future__ import annotations

DICT_OF_DOTTED_KEYS = ("search_space", "scheduler.mutations")  # their keys hold dots themselves


def split_dotted(key: str) -> tuple[str, str]:
    """'train.lr' -> ('train', 'lr'): a TrialConfig section and one of its keys."""
    section, _, leaf = key.partition(".")
    return section, leaf


def set_dotted(raw: dict, key: str, value) -> None:
    section, leaf = split_dotted(key)
    raw.setdefault(section, {})[leaf] = value


def split_override(key: str) -> list[str]:
    """The path of a `--set` key: `train.lr` -> [train, lr]; `search_space.train.lr` -> [search_space, train.lr]."""
    for section in DICT_OF_DOTTED_KEYS:
        if key.startswith(section + ".") and len(key) > len(section) + 1:
            return [*section.split("."), key[len(section) + 1 :]]
    return key.split(".")


def nest(flat: dict) -> dict:
    """{"train.lr": x} -> {"train": {"lr": x}}."""
    nested: dict = {}
    for key, value in flat.items():
        set_dotted(nested, key, value)
    return nested


def flatten(nested: dict, prefix: str = "") -> dict:
    """{"train": {"lr": x}} -> {"train.lr": x}."""
    flat = {}
    for key, value in nested.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, path + "."))
        else:
            flat[path] = value
    return flat
