"""reseed/reseed.json as a typed record: what the seed re-runs gave and which configuration they
chose. tuning/stages/reseed.py writes it; promote, the tune outcome and `caviar reseed` read its fields."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class SeedRun:
    """One seed of one configuration: its best evaluation by the job's metric, scored on test."""

    seed: int
    val: float  # the job's metric: what chooses
    val_accuracy: float
    test_accuracy: float
    test_f1: float
    test_metrics: dict  # model.evaluate.Metrics as JSON: promote reuses it, no second pass over test
    checkpoint: str  # a path, or on object storage a URI
    parameters: int
    steps: int


@dataclass
class VsLeader:
    """The mean paired difference from the leader, over seeds and examples, 95%."""

    difference: float
    interval: list[float]
    n: int
    separated: bool


@dataclass
class ReseededConfig:
    rank: int
    source_trial: str
    params: dict
    runs: list[SeedRun]
    parameters: int
    steps: int
    val_mean: float
    val_std: float
    test_mean: float
    test_std: float
    vs_leader: VsLeader | None = None  # None for the leader itself

    @classmethod
    def from_json(cls, raw: dict) -> ReseededConfig:
        versus = raw.get("vs_leader")
        return cls(
            **{k: v for k, v in raw.items() if k not in ("runs", "vs_leader")},
            runs=[SeedRun(**run) for run in raw["runs"]],
            vs_leader=VsLeader(**versus) if versus else None,
        )


@dataclass
class ReseedRecord:
    seeds: int
    top_k: int
    picked: str  # how the configurations were picked, in words
    metric: str
    configs: list[ReseededConfig]
    leader_rank: int
    chosen_rank: int
    best_run: SeedRun  # the chosen configuration's best seed: what promote takes
    chosen_because: str | None = None  # older records lack it
    extra: dict = field(default_factory=dict)  # keys a newer caviar wrote: kept, not read

    @property
    def chosen(self) -> ReseededConfig:
        return next(c for c in self.configs if c.rank == self.chosen_rank)

    @classmethod
    def from_json(cls, raw: dict) -> ReseedRecord:
        known = {"seeds", "top_k", "picked", "metric", "leader_rank", "chosen_rank", "chosen_because"}
        return cls(
            **{k: raw[k] for k in known if k in raw},
            configs=[ReseededConfig.from_json(c) for c in raw["configs"]],
            best_run=SeedRun(**raw["best_run"]),
            extra={k: v for k, v in raw.items() if k not in known | {"configs", "best_run"}},
        )

    def as_json(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k != "extra"} | self.extra
        for config in out["configs"]:
            if config["vs_leader"] is None:
                del config["vs_leader"]  # the leader has no difference from itself
        return out

    def describe(self) -> list[str]:
        """One line a configuration, then the choice and why."""
        lines = [f"re-ran {self.picked}, {self.seeds} seeds each:"]
        for c in self.configs:
            versus = c.vs_leader
            against = (
                f"  vs config {self.leader_rank}: {versus.difference:+.4f} "
                f"[{versus.interval[0]:+.4f}, {versus.interval[1]:+.4f}]"
                f" {'separated' if versus.separated else 'not separated'}"
                if versus
                else ""
            )
            lines.append(
                f"  config {c.rank} ({c.source_trial}): val {c.val_mean:.4f} ± {c.val_std:.4f}  "
                f"test {c.test_mean:.4f} ± {c.test_std:.4f}  {c.parameters:,} parameters, {c.steps:,} steps" + against
            )
        lines.append(f"chosen: config {self.chosen_rank}: {self.chosen_because}; promote takes its best seed")
        return lines
