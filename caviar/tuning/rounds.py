"""Coarse-to-fine rounds: each round searches a space narrowed around the previous round's top-k.

Numeric ranges shrink to the span of the top-k values plus a margin on each side (in log space for
log-distributed parameters), clipped to the round before; a categorical keeps only the values the
top-k used. Ray Tune cannot change a restored experiment's search space, so each round is its own
Tuner run in <experiment>/round-<r>/, all under one folder, one leaderboard and one TensorBoard.
"""

from __future__ import annotations

import math

from caviar.job.schema import Distribution

MIN_SHARE = 0.1  # a numeric range never narrows below 10% of its previous width


def narrow(dist: Distribution, values: list, margin: float) -> Distribution:
    """The distribution for the next round, given the values the top-k trials used."""
    kind, args = dist.kind, dist.args
    if kind in ("choice", "grid"):
        kept = [v for v in args if v in values]
        return Distribution(**{kind: kept or list(args)})
    log = kind == "loguniform"
    to, back = (math.log, math.exp) if log else (float, float)
    low, high = to(args[0]), to(args[1])
    vals = [to(v) for v in values]
    lo, hi = min(vals), max(vals)
    width = max(hi - lo, MIN_SHARE * (high - low))
    center = (lo + hi) / 2
    lo, hi = min(lo, center - width / 2), max(hi, center + width / 2)
    lo, hi = max(low, lo - margin * width), min(high, hi + margin * width)
    if kind == "randint":
        lo_i, hi_i = max(args[0], math.floor(lo)), min(args[1], math.ceil(hi))
        if lo_i >= hi_i:
            return Distribution(choice=[lo_i])
        return Distribution(randint=(lo_i, hi_i))
    new = (max(args[0], back(lo)), min(args[1], back(hi)))  # exp(log(x)) can overshoot x by an ulp
    if kind == "quniform":
        return Distribution(quniform=(*new, args[2]))
    return Distribution(**{kind: new})


def narrow_space(space: dict[str, Distribution], top_params: list[dict], margin: float) -> dict[str, Distribution]:
    return {key: narrow(dist, [p[key] for p in top_params if key in p], margin) for key, dist in space.items()}


def describe_space(space: dict[str, Distribution]) -> dict:
    return {key: {dist.kind: list(dist.args)} for key, dist in space.items()}


def read_space(described: dict) -> dict[str, Distribution]:
    return {key: Distribution(**value) for key, value in described.items()}
