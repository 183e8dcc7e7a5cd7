"""How many of a candidate's gate reviews the version in service trained on or chose by, under the
old split (version 1: a seeded gate inside each job's own split) and today's (version 2: a hash of
each review), before and after the gate drops what either version saw (issue 47, item 2).

To run: NSMC_DIR=/path/to/nsmc python -m bench.gate_overlap [--record]
        python -m bench.gate_overlap --smoke   (the test fixture, seconds: checks the script runs)

The version in service was trained with the default split. Each candidate changes one split
setting, as the tester's did. Nothing is trained: the figures are the splits' own rows, counted by
review text (NSMC repeats about 2% of its reviews), so they hold for any model. The yardstick is the
version-1 split, where the overlap was found.
"""

from __future__ import annotations

import time

import numpy as np

from bench.common import FIXTURE_DATA, BenchParser, run_main, write_result
from model.config import DataConfig
from model.data import locate_nsmc, read_train_file
from model.split import held_out, parts_of, review_keys

CANDIDATES = {
    "val_fraction 0.2": {"val_fraction": 0.2},
    "gate 0.1": {"gate": 0.1},
    "seed 3, limit 30000": {"seed": 3, "limit": 30_000},
    "gate 1e-9": {"gate": 1e-9},
}


def overlap(served: DataConfig, candidate: DataConfig, full, keys: np.ndarray) -> dict:
    """The candidate's gate against what the version in service trained on or chose by."""
    seen = keys[parts_of(served, full, keys).seen]
    drawn = keys[parts_of(candidate, full, keys).gate]
    inside = int(np.isin(drawn, seen).sum())
    kept = held_out(candidate, full, [served])
    after = int(np.isin(review_keys(kept.reviews.document), seen).sum())
    return {
        "gate_reviews_drawn": len(drawn),
        "seen_by_the_version_in_service": inside,
        "seen_share": round(inside / len(drawn), 4) if len(drawn) else None,
        "gate_reviews_after_the_rule": len(kept.reviews),
        "seen_after_the_rule": after,
    }


def main() -> None:
    args = BenchParser(__doc__).parse_args()
    data = DataConfig(**FIXTURE_DATA) if args.smoke else DataConfig()
    data = data.model_copy(update={"dir": str(locate_nsmc(data))})
    full, _, _ = read_train_file(data)
    keys = review_keys(full.document)
    started = time.perf_counter()
    figures = {"train_reviews": len(full), "served": {"val_fraction": data.val_fraction, "gate": data.gate}}
    for version in (1, 2):
        served = data.model_copy(update={"split": version})
        rows = {}
        for name, change in CANDIDATES.items():
            rows[name] = overlap(served, served.model_copy(update=change), full, keys)
            print(f"split {version}, candidate {name}: {rows[name]}", flush=True)
        figures[f"split_{version}"] = rows
    figures["seconds"] = round(time.perf_counter() - started, 2)
    write_result("gate_overlap", figures, smoke=args.smoke)


if __name__ == "__main__":
    run_main(main, "bench.gate_overlap")
