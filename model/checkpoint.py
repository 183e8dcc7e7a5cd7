"""A checkpoint is one folder, written atomically: weights, tokenizer, configs, and resume state.

model.safetensors   weights
config.json         transformers config (rebuilds the network offline)
tokenizer.json ...  the tokenizer, as save_pretrained writes it
caviar.json         the TrialConfig, data fingerprint and the metrics at save time
trainer_state.pt    optimizer, scheduler, step, RNG state: enough to resume bit for bit
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import ValidationError
from safetensors import safe_open
from safetensors.torch import load_model, save_model
from torch import nn
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from model.config import ModelConfig, TrialConfig
from model.errors import UserError, short
from model.files import file_sha256, read_json_object, write_json_atomically
from model.network import from_config, load_hf_config
from model.predictions import Predictions

WEIGHTS, META, STATE = "model.safetensors", "caviar.json", "trainer_state.pt"
CONFIG, TOKENIZER = "config.json", "tokenizer.json"  # what save_pretrained writes


def fill_checkpoint(
    folder: Path,
    net,
    tokenizer,
    cfg: TrialConfig,
    meta: dict,
    trainer_state: dict | None,
    predictions: Predictions | None = None,
) -> None:
    """Write a checkpoint's files into an existing (fresh) folder; with the evaluation's validation
    predictions, so that checkpoints can be compared pairwise later without running them again."""
    save_model(net, str(folder / WEIGHTS))
    net.config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    if trainer_state is not None:
        torch.save(trainer_state, folder / STATE)
    # the large files' digests: a copy fetched from object storage is checked against them
    digests = {name: file_sha256(folder / name) for name in (WEIGHTS, STATE) if (folder / name).is_file()}
    write_json_atomically(folder / META, {"config": cfg.model_dump(mode="json"), **meta, "sha256": digests})
    if predictions is not None:
        predictions.save(folder)


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
    """Every file is checked as it is loaded, not only by checksum: a file altered and re-signed, or
    one damaged in an experiment folder, is one UserError naming it."""
    folder = Path(folder)
    if not is_checkpoint(folder):
        raise UserError(f"{folder} is not a caviar checkpoint (no {WEIGHTS} or {META})")
    meta = read_json_object(folder / META)
    try:
        cfg = TrialConfig.model_validate(meta.pop("config"))
    except KeyError:
        raise UserError(f"{folder / META}: damaged, it has no 'config'") from None
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "config"
        raise UserError(f"{folder / META}: damaged, config.{where}: {short(first['msg'], 100)}") from None
    hf_config = _loaded(CONFIG, folder, lambda: load_hf_config(folder))
    _check_bounds(folder, hf_config)
    _check_size(folder, _loaded(CONFIG, folder, lambda: _elements(from_config(hf_config, cfg.model, device="meta"))))
    net = _loaded(CONFIG, folder, lambda: from_config(hf_config, cfg.model))
    _loaded(WEIGHTS, folder, lambda: load_model(net, str(folder / WEIGHTS)))
    tokenizer = _loaded(TOKENIZER, folder, lambda: AutoTokenizer.from_pretrained(folder))
    if len(tokenizer) > net.config.vocab_size:
        raise UserError(
            f"{folder / TOKENIZER}: {len(tokenizer)} tokens, more than the network's {net.config.vocab_size}"
        )
    state = None
    if with_state and (folder / STATE).is_file():
        state = _loaded(STATE, folder, lambda: torch.load(folder / STATE, map_location="cpu", weights_only=False))
    return Loaded(net=net, tokenizer=tokenizer, config=cfg, meta=meta, trainer_state=state)


HF_SHAPE_KEYS = {  # config.json's names for the shape keys ModelConfig bounds
    "vocab_size": "vocab_size",
    "num_hidden_layers": "layers",
    "hidden_size": "hidden",
    "num_attention_heads": "heads",
    "intermediate_size": "intermediate",
}


def _check_bounds(folder: Path, hf_config) -> None:
    """The bounds a job's shape keys have hold for a loaded config.json too, before anything is built."""
    for key, field in HF_SHAPE_KEYS.items():
        value = getattr(hf_config, key, None)
        most = next(m.le for m in ModelConfig.model_fields[field].metadata if hasattr(m, "le"))
        if value is not None and not (isinstance(value, int) and 1 <= value <= most):
            raise UserError(f"{folder / CONFIG}: damaged, {key} is {short(value, 40)}; expected 1 to {most:,}")


def _elements(net: nn.Module) -> int:
    return sum(t.numel() for t in net.state_dict().values())


def weight_count(folder: Path) -> int:
    """The values a checkpoint's weights hold, read from the file's header (nothing is loaded)."""
    try:
        with safe_open(str(Path(folder) / WEIGHTS), "pt") as weights:
            return sum(math.prod(weights.get_slice(key).get_shape()) for key in weights.keys())  # noqa: SIM118
    except Exception as err:  # a truncated or foreign file
        raise UserError(f"{Path(folder) / WEIGHTS}: damaged, cannot read it ({short(err, 120)})") from None


def _check_size(folder: Path, described: int) -> None:
    """config.json must describe the network the weights hold: an altered one could otherwise ask for
    any size. Counted on the meta device, so nothing is allocated."""
    held = weight_count(folder)
    if described != held:
        raise UserError(
            f"{folder / CONFIG}: describes a network of {described:,} values, but {WEIGHTS} holds {held:,}; "
            "the two do not belong together"
        )


def _loaded(name: str, folder: Path, load):
    """`load()`, with whatever a damaged file makes transformers, safetensors or torch raise as one line."""
    if not (folder / name).is_file():
        raise UserError(f"{folder / name}: missing; the checkpoint is incomplete")
    try:
        return load()
    except UserError:
        raise
    except Exception as err:  # each library raises its own types for a damaged file (RecursionError too)
        first = str(err).splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{folder / name}: damaged, cannot load it ({short(first, 120)})") from None
