"""`vllm serve` throughput with the latentwatch plugin on vs off, both eager.

Two measurements, each printed as generated tokens/s and a ratio (target
>= 0.95 with two layers captured):

1. servers side by side: the same OpenAI-compatible vLLM server (CPU, bf16,
   --enforce-eager) started without the plugin, then with it capturing two
   layers (12, 20) into a real sidecar process, then without it again (the
   "off" figure is the mean of both, so drift of a shared machine between
   servers does not count as overhead); optionally a server with lookback
   heads as well;
2. interleaved in the plugin's server: rounds of monitored requests alternate
   with rounds of requests that opt out (``vllm_xargs: {"latentwatch": "off"}``,
   hooks installed but idle), so slow drift of a shared machine cancels.

3. the sender alone: the CPU the capture client spends per token (rows of two
   layers for 8 interleaved requests, one decode step per 30 ms) sending to
   the same sidecar, to set against vLLM's CPU per token.

The workload is rounds of concurrent chat requests of fixed length
(``ignore_eos``). vLLM's CPU worker binds its compute threads to core 0; the
sidecar is pinned to the last core, where the API server also runs (on a
2-core machine they compete: a real deployment gives the sidecar its own cores).
Run: python bench/vllm_overhead.py [--rounds 6] [--concurrency 8] [--tokens 64] [--heads L14H5,L27H8]
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

import psutil
from latentwatch.models import bundled_checkpoint
from sidecar_process import free_port, start_sidecar

PROMPTS = [
    "Write a detailed explanation of how a bicycle gear system works.",
    "Describe the water cycle for a school report.",
    "What should I pack for a week of hiking in the mountains?",
    "Explain how compound interest works with an example.",
]


def start_vllm(port: int, plugin_env: dict[str, str], log_path: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LATENTWATCH_VLLM_")}
    env.update(plugin_env)
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(bundled_checkpoint()),
           "--served-model-name", "m", "--host", "127.0.0.1", "--port", str(port), "--max-model-len", "1024",
           "--kv-cache-memory-bytes", str(1 << 30), "--enforce-eager"]  # fmt: skip
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


def chat(port: int, prompt: str, tokens: int, opt_out: bool = False) -> int:
    body = {"model": "m", "messages": [{"role": "user", "content": prompt}], "max_tokens": tokens,
            "min_tokens": tokens, "ignore_eos": True, "temperature": 0}  # fmt: skip
    if opt_out:
        body["vllm_xargs"] = {"latentwatch": "off"}
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())["usage"]["completion_tokens"]


def cpu_seconds(procs) -> float:
    """User + system CPU time of vLLM's processes (API server, engine core, worker)."""
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def run_round(pool, port: int, prompts: list[str], tokens: int, procs, opt_out: bool = False) -> tuple[float, float]:
    """(generated tokens/s, vLLM CPU milliseconds per generated token) of one round."""
    t, cpu = time.perf_counter(), cpu_seconds(procs)
    n = sum(pool.map(lambda p: chat(port, p, tokens, opt_out), prompts))
    return n / (time.perf_counter() - t), 1000 * (cpu_seconds(procs) - cpu) / n


def run_server(name: str, plugin_env: dict[str, str], args, interleave: bool = False) -> dict[str, list[float]]:
    """Generated tokens/s per round; with ``interleave``, monitored and opted-out rounds alternate."""
    port = free_port()
    proc = start_vllm(port, plugin_env, f"/tmp/latentwatch-vllm-bench-{name.replace(' ', '-')}.log")
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.concurrency)]
    rates: dict[str, list[float]] = {"monitored": [], "opted out": []}
    cpu: dict[str, list[float]] = {"monitored": [], "opted out": []}
    try:
        procs = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        with ThreadPoolExecutor(args.concurrency) as pool:
            run_round(pool, port, prompts, 8, procs)  # warm-up
            for _ in range(args.rounds):
                for kind in ("monitored", "opted out") if interleave else ("monitored",):
                    rate, ms = run_round(pool, port, prompts, args.tokens, procs, opt_out=kind == "opted out")
                    rates[kind].append(rate)
                    cpu[kind].append(ms)
    finally:
        proc.terminate()
        proc.wait(60)
    for kind, r in rates.items():
        if r:
            label = name if not interleave else f"{name} ({kind})"
            print(f"{label:>36}: {statistics.median(r):7.1f} tokens/s, {statistics.median(cpu[kind]):6.2f} CPU ms/token"
                  f" (rounds: {', '.join(f'{x:.1f}' for x in r)})", flush=True)  # fmt: skip
    return {**rates, "cpu monitored": cpu["monitored"], "cpu opted out": cpu["opted out"]}


def sender_cpu_ms_per_token(sidecar_port: int, requests: int = 8, steps: int = 150) -> float:
    """CPU milliseconds this process spends per token sending two layers' rows (hooks' side + sender thread)."""
    import torch
    from latentwatch.capture import GrpcMonitorClient
    from latentwatch.detectors.base import Span
    from latentwatch.v1 import monitor_pb2 as pb

    hooks = ("model.layers.12", "model.layers.20")
    client = GrpcMonitorClient(f"127.0.0.1:{sidecar_port}", "m")
    client.wait_connected(10)
    for r in range(requests):
        client.start_request(f"r{r}", [Span(pb.SPAN_ROLE_USER, 0, 30), Span(pb.SPAN_ROLE_RESPONSE, 30, 0)])
        for h in hooks:
            client.send_chunk(f"r{r}", h, 0, torch.randn(30, 576).bfloat16())
    time.sleep(2)
    rows = torch.randn(steps, requests, 576).bfloat16()
    cpu = time.process_time()
    for s in range(steps):
        for h in hooks:
            for r in range(requests):
                client.send_chunk(f"r{r}", h, 30 + s, rows[s, r : r + 1])
        time.sleep(0.03)
    while client._buf:
        time.sleep(0.01)
    time.sleep(0.5)  # the last messages leave the gRPC stack
    cpu = time.process_time() - cpu
    for r in range(requests):
        client.end_request(f"r{r}")
    client.close()
    return 1000 * cpu / (steps * requests)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--heads", default="", help="also measure with these lookback heads, e.g. L14H5,L27H8")
    args = ap.parse_args()
    sidecar_port = free_port()
    sidecar = start_sidecar(
        sidecar_port,
        {"LATENTWATCH_METRICS_PORT": "none", "LATENTWATCH_SQLITE_PATH": "/tmp/latentwatch-vllm-bench.sqlite"},
    )
    try:
        on = {"LATENTWATCH_VLLM_SIDECAR": f"127.0.0.1:{sidecar_port}", "LATENTWATCH_VLLM_LAYERS": "12,20"}
        print(f"sender alone: {sender_cpu_ms_per_token(sidecar_port):.3f} CPU ms per token (2 layers)", flush=True)
        before = run_server("plugin off", {}, args)
        both = run_server("plugin on, 2 layers", on, args, interleave=True)
        after = run_server("plugin off, again", {}, args)
        off = (statistics.median(before["monitored"]) + statistics.median(after["monitored"])) / 2
        off_cpu = statistics.median(before["cpu monitored"] + after["cpu monitored"])
        on_rate = statistics.median(both["monitored"])
        paired = statistics.median(m / o for m, o in zip(both["monitored"], both["opted out"], strict=True))
        cpu_paired = statistics.median(o / m for m, o in zip(both["cpu monitored"], both["cpu opted out"], strict=True))
        print(f"ratio on/off, servers side by side (2 layers): {on_rate / off:.3f}  (target >= 0.95)")
        print(f"ratio monitored/opted-out, interleaved rounds (2 layers): {paired:.3f}  (target >= 0.95)")
        print(f"CPU cost ratio off/on per generated token (2 layers): side by side "
              f"{off_cpu / statistics.median(both['cpu monitored']):.3f}, interleaved {cpu_paired:.3f}"
              "  (the throughput ratio a CPU-bound engine would see; robust to a shared machine's load)")  # fmt: skip
        if args.heads:
            heads = run_server("plugin on, + heads", {**on, "LATENTWATCH_VLLM_HEADS": args.heads}, args)
            print(f"ratio on/off, servers side by side (2 layers + {args.heads}): "
                  f"{statistics.median(heads['monitored']) / off:.3f}; CPU cost ratio "
                  f"{off_cpu / statistics.median(heads['cpu monitored']):.3f}")  # fmt: skip
    finally:
        sidecar.terminate()
        sidecar.wait(10)


if __name__ == "__main__":
    main()
