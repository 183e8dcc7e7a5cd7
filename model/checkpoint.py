"""A checkpoint is one folder, written atomically: weights, tokenizer, configs, and resume state.

model.safetensors   weights
config.json         transformers config (rebuilds the network offline)
tokenizer.json ...  the tokenizer, as save_pretrained writes it
caviar.json         the TrialConfig, data fingerprint and the metrics at save time
trainer_state.pt    optimizer, scheduler, step, RNG state: enough to resume bit for bit
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model
from torch import nn
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from model.config import TrialConfig
from model.errors import UserError
from model.files import write_json_atomically
from model.network import from_config, load_hf_config

WEIGHTS, META, STATE = "model.safetensors", "caviar.json", "trainer_state.pt"


def fill_checkpoint(folder: Path, net, tokenizer, cfg: TrialConfig, meta: dict, trainer_state: dict | None) -> None:
    """Write a checkpoint's files into an existing (fresh) folder."""
    save_model(net, str(folder / WEIGHTS))
    net.config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    write_json_atomically(folder / META, {"config": cfg.model_dump(mode="json"), **meta})
    if trainer_state is not None:
        torch.save(trainer_state, folder / STATE)


@dataclass
class Loaded:
    net: nn.Module
    tokenizer: PreTrainedTokenizerBase
    config: TrialConfig
    meta: dict
    trainer_state: dict | None


def is_checkpoint(folder: Path) -> bool:
    """Holds the files a load needs (a folder cut short by a crash does not)."""
    return (Path(folder) / WEIGHTS).is_file() and (Path(folder) / META).is_file()


def load_checkpoint(folder: Path, with_state: bool = False) -> Loaded:
    folder = Path(folder)
    if not is_checkpoint(folder):
        raise UserError(f"{folder} is not a caviar checkpoint (no {WEIGHTS} or {META})")
    meta = json.loads((folder / META).read_text(encoding="utf-8"))
    cfg = TrialConfig.model_validate(meta.pop("config"))
    net = from_config(load_hf_config(folder), cfg.model)
    try:
        load_model(net, str(folder / WEIGHTS))
    except Exception as err:  # safetensors raises its own types for a truncated or foreign file
        raise UserError(f"{folder / WEIGHTS}: cannot load the weights ({str(err)[:120]})") from None
    tokenizer = AutoTokenizer.from_pretrained(folder)
    state = None
    if with_state and (folder / STATE).is_file():
        state = torch.load(folder / STATE, map_location="cpu", weights_only=False)
    return Loaded(net=net, tokenizer=tokenizer, config=cfg, meta=meta, trainer_state=state)
