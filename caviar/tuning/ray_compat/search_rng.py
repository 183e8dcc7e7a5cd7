"""The generator Ray's random and grid search draw trials with, for sampling fused members.

`fuse: K` must try the configurations a `fuse: 1` search of the same job would (tuning/members/fusion.py).
Ray's BasicVariantGenerator seeds `generate_variants` with its private
`ray.tune.search.sample._BackwardsCompatibleNumpyRng(seed)`; the members are drawn with the same.

Upstream: none filed. Canary: test_ray_compat runs a real `fuse: 1`-style Ray search of a seed and
compares its trials' configurations with the members drawn here.
"""

from __future__ import annotations


def search_rng(seed: int | None):
    from ray.tune.search.sample import _BackwardsCompatibleNumpyRng

    return _BackwardsCompatibleNumpyRng(seed)
