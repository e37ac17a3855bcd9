"""`vllm serve` throughput with the latentwatch plugin on vs off, both eager.

Starts the same OpenAI-compatible vLLM server (CPU, bf16, --enforce-eager) once
without the plugin configured and once with it capturing two layers (12, 20)
into a real sidecar process, optionally with lookback heads too, and drives
each with the same workload: rounds of concurrent chat requests of fixed
length (``ignore_eos``). Prints generated tokens/s per configuration and the
on/off ratio; target >= 0.95 with two layers captured.

vLLM's CPU worker binds its compute threads to core 0 and leaves core 1 to
the rest; the sidecar is pinned to the last core, as it would sit on its own
cores next to a GPU server. Each server is warmed up before timing.
Run: python bench/vllm_overhead.py [--rounds 4] [--concurrency 8] [--tokens 64] [--heads L14H5,L27H8]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from latentwatch.models import bundled_checkpoint

PROMPTS = [
    "Write a detailed explanation of how a bicycle gear system works.",
    "Describe the water cycle for a school report.",
    "What should I pack for a week of hiking in the mountains?",
    "Explain how compound interest works with an example.",
]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sidecar(port: int) -> subprocess.Popen:
    env = {**os.environ, "LATENTWATCH_METRICS_PORT": "none", "OMP_NUM_THREADS": "1",
           "LATENTWATCH_SQLITE_PATH": "/tmp/latentwatch-vllm-bench.sqlite"}  # fmt: skip
    cmd = [sys.executable, "-m", "latentwatch.cli", "serve", "--listen", f"127.0.0.1:{port}"]
    if sys.platform.startswith("linux") and (os.cpu_count() or 1) > 1:
        cmd = ["taskset", "-c", str(os.cpu_count() - 1)] + cmd
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    proc.stdout.readline()  # "listening on ..."
    return proc


def start_vllm(port: int, plugin_env: dict[str, str], log_path: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LATENTWATCH_VLLM_")}
    env.update(plugin_env)
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(bundled_checkpoint()),
           "--served-model-name", "m", "--host", "127.0.0.1", "--port", str(port), "--max-model-len", "1024",
           "--gpu-memory-utilization", "0.3", "--enforce-eager"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=open(log_path, "w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"vLLM exited with {proc.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return proc
        except OSError:
            time.sleep(2)
    proc.kill()
    raise SystemExit(f"vLLM did not start in 10 min; see {log_path}")


def chat(port: int, prompt: str, tokens: int) -> int:
    body = {"model": "m", "messages": [{"role": "user", "content": prompt}], "max_tokens": tokens,
            "min_tokens": tokens, "ignore_eos": True, "temperature": 0}  # fmt: skip
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())["usage"]["completion_tokens"]


def throughput(port: int, rounds: int, concurrency: int, tokens: int) -> list[float]:
    """Generated tokens/s of each round of ``concurrency`` simultaneous requests."""
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(concurrency)]
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda p: chat(port, p, 8), prompts))  # warm-up
        rates = []
        for _ in range(rounds):
            t = time.perf_counter()
            n = sum(pool.map(lambda p: chat(port, p, tokens), prompts))
            rates.append(n / (time.perf_counter() - t))
    return rates


def measure(name: str, plugin_env: dict[str, str], args) -> float:
    port = free_port()
    proc = start_vllm(port, plugin_env, f"/tmp/latentwatch-vllm-bench-{name}.log")
    try:
        rates = throughput(port, args.rounds, args.concurrency, args.tokens)
    finally:
        proc.terminate()
        proc.wait(60)
    rate = statistics.median(rates)
    print(f"{name:>22}: {rate:7.1f} generated tokens/s (rounds: {', '.join(f'{r:.1f}' for r in rates)})", flush=True)
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--heads", default="", help="also measure with these lookback heads, e.g. L14H5,L27H8")
    args = ap.parse_args()
    sidecar_port = free_port()
    sidecar = start_sidecar(sidecar_port)
    try:
        on = {"LATENTWATCH_VLLM_SIDECAR": f"127.0.0.1:{sidecar_port}", "LATENTWATCH_VLLM_LAYERS": "12,20"}
        off_rate = measure("plugin off", {}, args)
        on_rate = measure("plugin on, 2 layers", on, args)
        print(f"throughput ratio on/off (2 layers): {on_rate / off_rate:.3f}  (target >= 0.95)")
        if args.heads:
            heads_rate = measure("plugin on, + heads", {**on, "LATENTWATCH_VLLM_HEADS": args.heads}, args)
            print(f"throughput ratio on/off (2 layers + {args.heads}): {heads_rate / off_rate:.3f}")
    finally:
        sidecar.terminate()
        sidecar.wait(10)


if __name__ == "__main__":
    main()
