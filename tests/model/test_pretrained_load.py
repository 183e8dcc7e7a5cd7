"""Issue 48.6: transformers' LOAD REPORT table (escape codes, the new head's MISSING keys) printed on
every fine-tune; now a fine-tune says nothing unless the encoder did not load whole."""

from __future__ import annotations

import logging

from model.config import ModelConfig
from model.network import from_pretrained, load_note

MISSING_LAYER = "bert.encoder.layer.0.attention.self.query.weight"


def test_fine_tuning_a_hub_model_prints_no_load_report(hub_standin, capfd, caplog):
    caplog.set_level(logging.INFO)
    net = from_pretrained(ModelConfig(pretrained=str(hub_standin), max_len=32))
    out, err = capfd.readouterr()
    assert "LOAD REPORT" not in out + err and "Loading weights" not in err and "\x1b[" not in err, err[-2000:]
    assert not [r for r in caplog.records if r.name in ("caviar.model", "transformers.modeling_utils")]
    assert net.classifier.out_features == 2


def test_only_an_encoder_that_did_not_load_whole_is_said():
    expected = {  # a new head, an MLM folder's missing pooler and its left-over prediction head
        "missing_keys": ["classifier.weight", "classifier.bias", "bert.pooler.dense.weight"],
        "unexpected_keys": ["cls.predictions.bias"],
        "mismatched_keys": [],
    }
    assert load_note("folder", expected, "bert") is None
    lost = {**expected, "missing_keys": [*expected["missing_keys"], MISSING_LAYER]}
    assert load_note("folder", lost, "bert") == (
        f"model.pretrained=folder: 1 encoder weights were not in it and start random (first: {MISSING_LAYER})"
    )
    reshaped = {**expected, "mismatched_keys": [("bert.embeddings.word_embeddings.weight", (300, 32), (8000, 32))]}
    assert "1 encoder weights had another shape and start random" in load_note("folder", reshaped, "bert")
