"""Search-space distributions, and the check that each names a real trial value with valid edges.

search_space:                 # distributions over TrialConfig keys, by dotted path
  train.lr: {loguniform: [1.0e-4, 3.0e-3]}
  train.batch_size: {choice: [32, 64, 128]}
"""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import Field, ValidationError, model_validator

from caviar.job.keys import split_dotted
from model.config import Strict, TrialConfig
from model.errors import short

RANGE_KINDS = ("loguniform", "uniform", "quniform", "randint")
KINDS = (*RANGE_KINDS, "choice", "grid")


class Distribution(Strict):
    """Exactly one of: loguniform/uniform [low, high], quniform [low, high, q], randint [low, high]
    (both ends included), choice [values], grid [values]."""

    loguniform: tuple[float, float] | None = Field(None, description="[low, high], sampled evenly in log space")
    uniform: tuple[float, float] | None = Field(None, description="[low, high], sampled evenly")
    quniform: tuple[float, float, float] | None = Field(
        None, description="[low, high, q]: uniform, rounded to a multiple of q"
    )
    randint: tuple[int, int] | None = Field(None, description="[low, high], an integer, both ends included")
    choice: list[Any] | None = Field(None, min_length=1, description="values, one drawn per trial")
    grid: list[Any] | None = Field(None, min_length=1, description="values, every one tried (num_samples times)")

    @model_validator(mode="after")
    def _one_valid_kind(self) -> Distribution:
        given = [k for k in KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(KINDS)} (got {len(given)})")
        if self.kind in RANGE_KINDS:
            low, high = self.args[:2]
            if low >= high:
                raise ValueError(f"{self.kind}: low ({low}) must be below high ({high})")
            if self.kind == "loguniform" and low <= 0:
                raise ValueError(f"loguniform: low must be > 0 (got {low})")
            if self.kind == "quniform" and self.args[2] <= 0:
                raise ValueError(f"quniform: q must be > 0 (got {self.args[2]})")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in KINDS if getattr(self, k) is not None)

    @property
    def args(self) -> tuple | list:
        return getattr(self, self.kind)

    def samples(self) -> list:
        """Values a trial may get at the edges of this distribution: enough to type-check it."""
        return list(self.args) if self.kind in ("choice", "grid") else list(self.args[:2])


def trial_keys() -> list[str]:
    """Every dotted key a search space may name: train.lr, model.layers, ..."""
    return [
        f"{s}.{leaf}"
        for s in ("data", "model", "train")
        for leaf in TrialConfig.model_fields[s].annotation.model_fields
    ]


def check_key(where: str, key: str, dist: Distribution, fixed: dict) -> None:
    """The dotted key must name a TrialConfig value, and every edge value must be valid there."""
    section, leaf = split_dotted(key)
    if key not in trial_keys():
        close = difflib.get_close_matches(key, trial_keys(), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else "expected e.g. train.lr or model.layers"
        raise ValueError(f"{where}: unknown key ({hint})")
    for value in dist.samples():
        trial = {**fixed, section: {**fixed[section], leaf: value}}
        try:
            TrialConfig.model_validate(trial)
        except ValidationError as err:
            first = err.errors()[0]
            raise ValueError(
                f"{where}: value {short(repr(value))}: {short(first['msg'].removeprefix('Value error, '), 200)}"
            ) from None
