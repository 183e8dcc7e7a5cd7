"""The promotion gate: the candidate against the version in service, on the same gate reviews.

Validation chose the candidate within its experiment, so its validation score is optimistic, and
the test file only reports. The gate split (`data.gate`, held out of train and validation) decides
whether the candidate replaces the served version: both are scored on its reviews, and the candidate
passes only if the paired 95% interval of its gain in accuracy lies above `promote.min_gain`. The
gate reads the train file alone; the test file is never opened here.

The gate split is drawn by a hash of each review (model/split.py), so a version trained with other
split settings held out the same reviews, up to its own `data.gate`. The comparison keeps only the
gate reviews that neither version trained on or chose by, and the card says how many were dropped;
below `promote.min_gate_reviews` it decides nothing, and only --force promotes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from caviar.experiment.intervals import CONFIDENCE, DRAWS, metric_on, paired_difference
from caviar.job.schema import JobSpec
from model.config import DataConfig
from model.data import load_gate
from model.errors import UserError
from model.predict import Predictor
from model.split import split_version

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
    drawn: int | None = None  # the candidate's gate reviews, before those a version had seen were dropped
    seen_before: int | None = None  # of those, how many either version trained on or chose by
    min_reviews: int = 0  # promote.min_gate_reviews: fewer decide nothing
    split: int | None = None  # the candidate's split version (model/split.py)

    @property
    def too_few(self) -> bool:
        return self.against is not None and self.reviews < max(1, self.min_reviews)

    @property
    def passed(self) -> bool:
        if self.against is None:
            return True
        return not self.too_few and self.interval is not None and self.interval[0] > self.min_gain

    def as_card(self) -> dict:
        return asdict(self) | {"passed": self.passed}

    @classmethod
    def from_card(cls, raw: dict) -> GateResult:
        """A card's `gate` record (as_card); `passed` is worked out again, keys it does not know are passed over."""
        return cls(**{k: v for k, v in raw.items() if k in cls.__dataclass_fields__})

    def gain_text(self) -> str:
        if self.too_few:
            return (
                f"only {self.reviews:,} gate reviews against {self.against} (promote.min_gate_reviews "
                f"{self.min_reviews:,}): {self._seen_text()}raise data.gate"
            )
        low, high = self.interval
        return (
            f"{self.gain * 100:+.2f} points [{low * 100:+.2f}, {high * 100:+.2f}] "
            f"on {self.reviews:,} gate reviews against {self.against}"
        )

    def _seen_text(self) -> str:
        if not self.seen_before:
            return ""
        return f"{self.seen_before:,} of the candidate's {self.drawn:,} were trained on or chosen by before; "

    def refusal(self) -> str:
        floor = (
            f" (promote.min_gain {self.min_gain * 100:.6g} points)" if self.min_gain and not self.too_few else ""
        )  # 0.999999: not "100.00"
        other = "" if self.same_data is not False else f"; {self.against} was trained on other data"
        return f"not promoted: {self.gain_text()}{floor}{other}; --force promotes anyway"


def positive_probabilities(folder: Path, texts: list[str]) -> np.ndarray:
    return Predictor.from_checkpoint(folder).probabilities(texts)


def gate(checkpoint: Path, job: JobSpec, current: Path | None, current_card: dict | None) -> GateResult:
    """Score the candidate (and the version in service, when there is one) on the gate reviews
    neither of them trained on or chose by."""
    in_service = _data_of(current_card, job.data.train_fingerprint)
    held, train_fingerprint = load_gate(job.data, [in_service] if in_service else [])
    reviews = held.reviews
    recorded = (current_card or {}).get("data_fingerprint")
    context = {
        "train_fingerprint": train_fingerprint,
        "drawn": held.drawn,
        "seen_before": held.seen_before,
        "split": split_version(job.data),
    }
    if held.drawn == 0:
        if current is None:
            return GateResult(reviews=0, candidate_accuracy=None, **context)
        raise UserError(
            f"data.gate is {job.data.gate:g} in job {job.name}: no gate reviews to compare it with {current.name} on; "
            "--force promotes it anyway"
        )
    if current is not None:
        context |= {
            "against": current.name,
            "min_gain": job.promote.min_gain,
            "min_reviews": job.promote.min_gate_reviews,
            "same_data": None if recorded is None else recorded == job.data.fingerprint,
        }
        unscored = GateResult(reviews=len(reviews), candidate_accuracy=None, **context)
        if unscored.too_few:  # too few to decide: nothing is scored
            return unscored
    labels, texts = reviews.label.to_numpy(), reviews.document.tolist()
    mine = positive_probabilities(checkpoint, texts)
    theirs = None if current is None else positive_probabilities(current, texts)
    return compare(labels, mine, theirs, **context)


def _data_of(card: dict | None, train_fingerprint: str | None) -> DataConfig | None:
    """The data settings the version in service was trained with, as its card records them; None
    for a card without them, or for another train file (its rows say nothing of this one's)."""
    try:
        data = DataConfig.model_validate(((card or {}).get("config") or {})["data"])
    except (KeyError, TypeError, ValidationError):
        return None
    same_file = None in (data.train_fingerprint, train_fingerprint) or data.train_fingerprint == train_fingerprint
    return data if same_file else None


def compare(labels: np.ndarray, mine: np.ndarray, theirs: np.ndarray | None, **context) -> GateResult:
    """The decision on scored gate reviews: the candidate's P(긍정) against the current version's
    (None: there is none); `context` holds GateResult's other fields. bench/selection.py calls it on
    every pair of its runs."""
    accuracy = float(metric_on("gate_accuracy", labels, mine)[0])
    if theirs is None:
        return GateResult(reviews=len(labels), candidate_accuracy=accuracy, **context)
    gain = paired_difference("gate_accuracy", labels, theirs, mine)
    return GateResult(
        reviews=len(labels),
        candidate_accuracy=accuracy,
        current_accuracy=float(metric_on("gate_accuracy", labels, theirs)[0]),
        gain=gain.value,
        interval=[gain.low, gain.high],
        mcnemar_p=gain.mcnemar_p,
        **context,
    )
