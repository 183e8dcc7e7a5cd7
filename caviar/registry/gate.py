"""The promotion gate: the candidate against the version in service, on the same gate reviews.

Validation chose the candidate within its experiment, so its validation score is optimistic, and
the test file only reports. The gate split (`data.gate`, held out of train and validation, fixed by
the split seed) decides whether the candidate replaces the served version: both are scored on its
reviews, and the candidate passes only if the paired 95% interval of its gain in accuracy lies above
`promote.min_gain`. The gate reads the train file alone; the test file is never opened here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from caviar.experiment.intervals import CONFIDENCE, DRAWS, metric_on, paired_difference
from caviar.job.schema import JobSpec
from model.data import load_gate
from model.errors import UserError
from model.predict import Predictor

METHOD = f"paired percentile bootstrap over the gate reviews ({DRAWS:,} resamples, {CONFIDENCE:.0%}); exact McNemar p"


@dataclass(frozen=True)
class GateResult:
    reviews: int
    candidate_accuracy: float | None
    against: str | None = None  # the version in service, if any
    current_accuracy: float | None = None
    gain: float | None = None  # candidate minus current, in accuracy (0.01 = one point)
    interval: list[float] | None = None
    mcnemar_p: float | None = None
    min_gain: float = 0.0
    same_data: bool | None = None  # both trained on the same data files (fingerprints)
    train_fingerprint: str = ""
    method: str = METHOD

    @property
    def passed(self) -> bool:
        return self.against is None or (self.interval is not None and self.interval[0] > self.min_gain)

    def as_card(self) -> dict:
        return asdict(self) | {"passed": self.passed}

    @classmethod
    def from_card(cls, raw: dict) -> GateResult:
        """A card's `gate` record (as_card); `passed` is worked out again, keys it does not know are passed over."""
        return cls(**{k: v for k, v in raw.items() if k in cls.__dataclass_fields__})

    def gain_text(self) -> str:
        low, high = self.interval
        return (
            f"{self.gain * 100:+.2f} points [{low * 100:+.2f}, {high * 100:+.2f}] "
            f"on {self.reviews:,} gate reviews against {self.against}"
        )

    def refusal(self) -> str:
        floor = (
            f" (promote.min_gain {self.min_gain * 100:.6g} points)" if self.min_gain else ""
        )  # 0.999999: not "100.00"
        other = "" if self.same_data is not False else f"; {self.against} was trained on other data"
        return f"not promoted: {self.gain_text()}{floor}{other}; --force promotes anyway"


def positive_probabilities(folder: Path, texts: list[str]) -> np.ndarray:
    return Predictor.from_checkpoint(folder).probabilities(texts)


def gate(checkpoint: Path, job: JobSpec, current: Path | None, current_card: dict | None) -> GateResult:
    """Score the candidate (and the version in service, when there is one) on the job's gate split."""
    reviews, train_fingerprint = load_gate(job.data)
    if len(reviews) == 0:
        if current is None:
            return GateResult(reviews=0, candidate_accuracy=None, train_fingerprint=train_fingerprint)
        raise UserError(
            f"data.gate is 0 in job {job.name}: no gate reviews to compare it with {current.name} on; "
            "--force promotes it anyway"
        )
    labels, texts = reviews.label.to_numpy(), reviews.document.tolist()
    mine = positive_probabilities(checkpoint, texts)
    theirs = None if current is None else positive_probabilities(current, texts)
    recorded = (current_card or {}).get("data_fingerprint")
    return compare(
        labels,
        mine,
        theirs,
        against=None if current is None else current.name,
        min_gain=job.promote.min_gain,
        same_data=None if recorded is None else recorded == job.data.fingerprint,
        train_fingerprint=train_fingerprint,
    )


def compare(
    labels: np.ndarray,
    mine: np.ndarray,
    theirs: np.ndarray | None,
    against: str | None = None,
    min_gain: float = 0.0,
    same_data: bool | None = None,
    train_fingerprint: str = "",
) -> GateResult:
    """The decision on scored gate reviews: the candidate's P(긍정) against the current version's
    (None: there is none). bench/selection.py calls it on every pair of its runs."""
    accuracy = float(metric_on("gate_accuracy", labels, mine)[0])
    base = GateResult(reviews=len(labels), candidate_accuracy=accuracy, train_fingerprint=train_fingerprint)
    if theirs is None:
        return base
    gain = paired_difference("gate_accuracy", labels, theirs, mine)
    return GateResult(
        reviews=len(labels),
        candidate_accuracy=accuracy,
        against=against,
        current_accuracy=float(metric_on("gate_accuracy", labels, theirs)[0]),
        gain=gain.value,
        interval=[gain.low, gain.high],
        mcnemar_p=gain.mcnemar_p,
        min_gain=min_gain,
        same_data=same_data,
        train_fingerprint=train_fingerprint,
    )
