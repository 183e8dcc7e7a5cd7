"""rounds.json as typed records: each coarse-to-fine round's search space, fixed before the round
starts so a resumed experiment searches exactly the same ranges. tuning/stages/rounds.py writes them; the
tune outcome reads them."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class RoundRecord:
    round: int
    space: dict  # dotted key -> {kind: [arguments]}, as a job's search_space is written
    folder: str  # round-<r>, inside the experiment folder

    def as_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict) -> RoundRecord:
        return cls(round=int(raw["round"]), space=dict(raw["space"]), folder=str(raw["folder"]))


def rounds_of(raw: list) -> list[RoundRecord]:
    return [RoundRecord.from_json(r) for r in raw]
