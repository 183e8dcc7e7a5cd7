"""Tokenizer checks: Korean round trip, and one training per (train split, vocab size)."""

from __future__ import annotations

from model import tokenizer as tk
from model.config import DataConfig
from model.data import load_splits
from tests.conftest import FIXTURE_NSMC


def fixture_texts() -> list[str]:
    return load_splits(DataConfig(dir=str(FIXTURE_NSMC))).train.document.tolist()


def test_korean_round_trip_has_no_unk():
    tok = tk.wrap(tk.train_wordpiece(fixture_texts(), 400))
    ids = tok("이 영화 정말 재미있어요")["input_ids"]
    assert tok.unk_token_id not in ids
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    assert tok.decode(ids, skip_special_tokens=True) == "이 영화 정말 재미있어요"


def test_nfkc_maps_full_width_forms_to_the_same_tokens():
    tok = tk.wrap(tk.train_wordpiece(fixture_texts() + ["ABC 123"], 400))
    assert tok("ＡＢＣ １２３")["input_ids"] == tok("ABC 123")["input_ids"]


def test_cached_tokenizer_is_trained_once(monkeypatch):
    texts = fixture_texts()
    calls = []
    real = tk.train_wordpiece
    monkeypatch.setattr(tk, "train_wordpiece", lambda *a: calls.append(a) or real(*a))
    first = tk.cached_wordpiece(texts, 350)
    second = tk.cached_wordpiece(texts, 350)
    assert len(calls) == 1
    assert first.get_vocab() == second.get_vocab()
    tk.cached_wordpiece(texts, 360)  # another vocab size is another tokenizer
    assert len(calls) == 2


def test_token_ids_are_the_same_in_every_process():
    """The trainer numbers tokens in thread-finishing order; the ids must not depend on it, or one
    model trains differently per process (a test near its threshold then fails now and then)."""
    import subprocess
    import sys

    code = (
        "import json; from model import tokenizer as tk; from tests.model.test_tokenizer import fixture_texts; "
        "print(json.dumps(sorted(tk.wrap(tk.train_wordpiece(fixture_texts(), 300)).get_vocab().items())))"
    )
    root = FIXTURE_NSMC.parents[2]
    runs = [
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=root)
        for _ in range(2)
    ]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr[-2000:]
    assert runs[0].stdout == runs[1].stdout
