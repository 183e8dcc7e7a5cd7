"""Tokenizers: a pretrained one from the hub, or a WordPiece trained on the train split (offline default).

Trained tokenizers are cached by (training texts, vocab size) behind a file lock, so parallel
trials on one node train it once and the others load it.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from filelock import FileLock
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from model.config import ModelConfig
from model.data import cache_root
from model.files import atomic_path
from model.remote import model_source

log = logging.getLogger("caviar.tokenizer")

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TOKENIZER_FILE = "tokenizer.json"


def train_wordpiece(texts: list[str], vocab_size: int) -> Tokenizer:
    """BERT-style WordPiece with NFKC, so full-width and composed Hangul forms map to one token."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    # The trainer's token SET is a function of the texts, but its ids are not: it merges in parallel
    # and numbers tokens in whatever order the threads finish, so two processes gave one model
    # different embedding rows (and different results). Number them in one fixed order instead;
    # WordPiece matches greedily by string, so tokenization itself is unchanged.
    learned = sorted(t for t in tok.get_vocab() if t not in SPECIAL_TOKENS)
    tok.model = models.WordPiece({t: i for i, t in enumerate(SPECIAL_TOKENS + learned)}, unk_token="[UNK]")
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return tok


def wrap(tok: Tokenizer | str | Path) -> PreTrainedTokenizerFast:
    """A transformers tokenizer over a `tokenizers` object or a tokenizer.json path."""
    kwargs = {"tokenizer_object": tok} if isinstance(tok, Tokenizer) else {"tokenizer_file": str(tok)}
    return PreTrainedTokenizerFast(
        **kwargs, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]"
    )


def texts_key(texts: list[str], vocab_size: int) -> str:
    digest = hashlib.sha256(f"wordpiece-v2|{vocab_size}|".encode())  # v2: fixed token ids
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\n")
    return digest.hexdigest()[:20]


def cached_wordpiece(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train once per (train split, vocab size); later calls and parallel trials load the cached file."""
    folder = cache_root() / "tokenizers" / texts_key(texts, vocab_size)
    path = folder / TOKENIZER_FILE
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder / ".lock")):
        if not path.is_file():
            log.info("training a %d-token WordPiece on %d reviews", vocab_size, len(texts))
            with atomic_path(path) as tmp:
                train_wordpiece(texts, vocab_size).save(str(tmp))
    return wrap(path)


def build_tokenizer(cfg: ModelConfig, train_texts: list[str]) -> PreTrainedTokenizerBase:
    if cfg.pretrained:
        return AutoTokenizer.from_pretrained(model_source(cfg.pretrained))
    return cached_wordpiece(train_texts, cfg.vocab_size)
