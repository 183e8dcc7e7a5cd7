"""The API's request and response models, and the check every review passes before the model sees it
(the CLI's `caviar predict` uses the same check)."""

from __future__ import annotations

import unicodedata
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator, model_validator

MAX_CHARS, MAX_BATCH = 1000, 256


def check_text(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(f"text is not valid Unicode (a lone surrogate at character {err.start})") from None
    if len(text) > MAX_CHARS:
        raise ValueError(f"text is {len(text)} characters; at most {MAX_CHARS}")
    if not any(readable(ch) for ch in text):
        raise ValueError("text must not be empty or whitespace (control, zero-width and direction marks count)")
    return text


# letters and symbols that draw nothing: Hangul fillers, the blank braille pattern
BLANK_LOOKING = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def readable(ch: str) -> bool:
    """Not whitespace, a control or format character (NUL, zero-width, RTL marks), a separator, a
    combining mark or variation selector on its own, or a blank-looking letter."""
    return not ch.isspace() and unicodedata.category(ch)[0] not in "CZM" and ch not in BLANK_LOOKING


def refuse_unknown_keys(data, known: frozenset[str]):
    """One error for a body's unknown keys, however many: pydantic's extra="forbid" makes one per key,
    and 150,000 of them in a 1.8 MB body held the event loop for ~0.7 s a request (issue 47, item 7)."""
    if isinstance(data, dict) and (unknown := data.keys() - known):
        first = next(key for key in data if key in unknown)
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise ValueError(f"{short_key(first)}: unknown field{more}")
    return data


def short_key(key: str) -> str:
    return key if len(key) <= 60 else key[:57] + "..."


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {"text": "이 영화 정말 재미있어요"}})
    # the limits are checked by check_text (one-line messages); json_schema_extra makes the schema say them
    text: StrictStr = Field(
        description=f"one review, 1 to {MAX_CHARS} characters",
        json_schema_extra={"minLength": 1, "maxLength": MAX_CHARS},
    )

    _text = field_validator("text")(check_text)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data):
        return refuse_unknown_keys(data, frozenset({"text"}))


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    texts: list[StrictStr] = Field(
        description=f"1 to {MAX_BATCH} reviews, each 1 to {MAX_CHARS} characters",
        json_schema_extra={
            "minItems": 1,
            "maxItems": MAX_BATCH,
            "items": {"type": "string", "minLength": 1, "maxLength": MAX_CHARS},
        },
    )

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data):
        return refuse_unknown_keys(data, frozenset({"texts"}))

    @field_validator("texts")
    @classmethod
    def _texts(cls, texts: list[str]) -> list[str]:
        if not texts:
            raise ValueError("texts must hold at least one text")
        if len(texts) > MAX_BATCH:
            raise ValueError(f"at most {MAX_BATCH} texts per batch (got {len(texts)})")
        for i, text in enumerate(texts):
            try:
                check_text(text)
            except ValueError as err:
                raise ValueError(f"texts[{i}]: {err}") from None
        return texts


class PredictionOut(BaseModel):
    label: Literal["부정", "긍정"]
    label_id: Literal[0, 1]
    positive_probability: float


class BatchOut(BaseModel):
    predictions: list[PredictionOut]


class ErrorOut(BaseModel):
    """Every 4xx the service sends: one line saying what is wrong."""

    detail: str = Field(description="what is wrong, in one line")


ERRORS = {422: {"model": ErrorOut, "description": "the request is not valid: empty, too long, not JSON, ..."}}
UNAUTHORIZED = {401: {"model": ErrorOut, "description": "missing or wrong bearer API key"}}
