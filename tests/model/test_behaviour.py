"""Behaviour checks on a trained model (Made-With-ML's tests/model): what it answers, not how it is
built. A tiny model trained on the hand-written fixture must get the clear cases right, keep its
answer under edits that do not change the meaning, and move the right way under edits that do."""

from __future__ import annotations

import pytest

from model.predict import Predictor
from model.train import train

pytestmark = pytest.mark.slow


class KeepLast:
    def __init__(self, folder):
        self.folder = folder

    def __call__(self, metrics, checkpoint):
        import shutil

        shutil.copytree(checkpoint, self.folder, dirs_exist_ok=True)


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    from model.config import TrialConfig
    from tests.conftest import TINY

    folder = tmp_path_factory.mktemp("trained") / "checkpoint"
    train(TrialConfig.model_validate(TINY), report=KeepLast(folder))
    return Predictor.from_checkpoint(folder)


# minimum functionality: reviews in the fixture's words, but not sentences from it
CLEAR = [
    ("연기가 정말 좋았고 감동적이에요", "긍정"),
    ("최고의 영화 강력 추천합니다", "긍정"),
    ("돈 아깝고 시간 아까운 영화", "부정"),
    ("지루하고 스토리가 엉망이다", "부정"),
]


@pytest.mark.parametrize(("text", "label"), CLEAR)
def test_clear_reviews_get_their_label(predictor, text, label):
    (prediction,) = predictor.predict([text])
    assert prediction.label == label, (text, prediction)


@pytest.mark.parametrize("text", [text for text, _ in CLEAR])
def test_edits_that_keep_the_meaning_keep_the_label(predictor, text):
    """Invariance: trailing punctuation, spacing and full-width forms (NFKC) do not flip the answer."""
    variants = [text + "!!", text + "...", "  " + text + "  ", text.replace(" ", "  ")]
    labels = {p.label for p in predictor.predict([text, *variants])}
    assert len(labels) == 1, (text, labels)


def test_adding_praise_or_a_complaint_moves_the_probability(predictor):
    """Directional: a lukewarm review gains P(긍정) with praise added, and a warm one loses it with a
    complaint (each base on the side that leaves room to move: the tiny model answers near 0 or 1)."""
    lukewarm, warm = "그냥 그런 영화", "배우들 연기가 너무 좋았다"
    p_lukewarm, p_praised, p_warm, p_complained = predictor.probabilities(
        [lukewarm, lukewarm + " " + warm, warm, warm + " 돈 주고 보기 아까웠어요"]
    )
    assert p_praised > p_lukewarm and p_complained < p_warm
