"""latentwatch benchmark: every target is a ratio measured side by side in one run.

(a) generation tokens/s with capture on vs off (two layers captured, sent to a real
    sidecar process over gRPC), at batch 1 and at batch 8 (left-padded batched
    ``generate``, one request per row); target >= 0.95.
(b) sidecar scoring throughput (tokens/s through the Stream RPC: SAE encode,
    detectors, verdicts) with 16 concurrent streams vs a bare torch matmul + top-k
    of the same SAE encode at its best batch size, on the same pinned core;
    target >= 0.8. Also 1, 4 and 64 streams.
(c) chunk -> verdict latency (a Score RPC round trip for one 16-token chunk, sent
    open-loop at 1,000 tokens/s offered, time counted from when each was due):
    p50 and p99; target p99 <= 25 ms.
(d) ``latentwatch score`` throughput (batched forwards stopped at the deepest hook,
    one engine pass per batch) vs a bare batched forward truncated at the same
    layer, on the same records; target >= 0.8.
(e) ``latentwatch score --ray`` with 1 and 2 local workers vs the single process
    (skip with --no-ray).

The sidecar runs as its own process pinned to one core, the model and clients on
the other, as they would sit on separate cores in production; on a 2-core box
sharing cores would measure CPU contention, not capture overhead.
Run: python bench/bench.py [--new-tokens 64] [--repeats 3] [--no-ray]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import torch
from latentwatch.capture import GrpcMonitorClient, HFCapture
from latentwatch.capture.chat import tokenize_chat
from latentwatch.capture.score import score_records
from latentwatch.capture.teacher_forced import last_hook, residual_rows
from latentwatch.detectors.packs import sae_dirs
from latentwatch.detectors.saes import load_sae
from latentwatch.jsonl import read_rows
from latentwatch.models import load_model
from latentwatch.sidecar.engine import Engine
from latentwatch.training.corpus import DATA_DIR
from latentwatch.v1 import monitor_pb2 as pb
from latentwatch.v1 import monitor_pb2_grpc as pb_grpc
from latentwatch.wire.codec import to_wire
from sidecar_process import start_sidecar

HOOKS = ["model.layers.12", "model.layers.20"]
EXTRA_SAES = ["smollm2-135m-instruct-l20"]
PROMPT = "Write a detailed explanation of how a bicycle gear system works."
PROMPTS = [
    PROMPT,
    "What is a good recipe for banana bread?",
    "Summarise the causes of the First World War in a paragraph.",
    "Hi",
    "Explain how vaccines train the immune system, step by step, for a ten-year-old.",
    "List five uses of a paperclip.",
    "Why is the sky blue?",
    "Give me tips for a job interview at a bank.",
]
CHUNK = 16
SIDECAR_CORE = (os.cpu_count() or 1) - 1


def generate_rate(lm, ids, mask, new_tokens: int, capture: HFCapture | None, items) -> float:
    monitored = capture.requests(items, mask) if capture else contextlib.nullcontext()
    t = time.perf_counter()
    with torch.no_grad(), monitored:
        out = lm.model.generate(
            ids,
            attention_mask=mask,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=lm.tokenizer.pad_token_id,
        )
    return ids.shape[0] * (out.shape[1] - ids.shape[1]) / (time.perf_counter() - t)


def bench_generation(lm, target: str, args) -> None:
    client = GrpcMonitorClient(target, lm.model_id, max_buffer=8192)
    client.wait_connected(30)
    capture = HFCapture(lm.model, HOOKS, client)
    for batch in (1, 8):
        cts = [tokenize_chat(lm.tokenizer, [{"role": "user", "content": p}]) for p in PROMPTS[:batch]]
        width = max(len(c.input_ids) for c in cts)
        ids = torch.tensor([[lm.tokenizer.pad_token_id] * (width - len(c.input_ids)) + c.input_ids for c in cts])
        mask = torch.tensor([[0] * (width - len(c.input_ids)) + [1] * len(c.input_ids) for c in cts])
        generate_rate(lm, ids, mask, 8, None, [])  # warm-up
        off, on = [], []
        for r in range(args.repeats):  # interleaved, so drift hits both alike
            off.append(generate_rate(lm, ids, mask, args.new_tokens, None, []))
            items = [(f"gen-{batch}-{r}-{i}", c.spans) for i, c in enumerate(cts)]
            on.append(generate_rate(lm, ids, mask, args.new_tokens, capture, items))
        off_r, on_r = statistics.median(off), statistics.median(on)
        print(
            f"(a) generation batch {batch}: capture off {off_r:.1f} tok/s, on {on_r:.1f} tok/s ({len(HOOKS)} "
            f"layers) -> ratio {on_r / off_r:.3f} (target >= 0.95); client drops {client.dropped}",
            flush=True,
        )
    client.close()
    capture.remove()


def request_messages(rid: str, model_id: str, rows: dict[str, torch.Tensor], n_tok: int) -> list[pb.ClientMessage]:
    """One request as a stream sends it: start, 16-row chunks interleaved across layers, end."""
    msgs = [
        pb.ClientMessage(
            start=pb.RequestStart(
                request_id=rid, model_id=model_id, spans=[pb.Span(role=pb.SPAN_ROLE_USER, start=1, end=n_tok)]
            )
        )
    ]
    for i in range(1, n_tok + 1, CHUNK):
        for h in HOOKS:
            msgs.append(
                pb.ClientMessage(
                    chunk=pb.ActivationChunk(
                        request_id=rid, hook_name=h, start_position=i, activations=to_wire(rows[h][i : i + CHUNK])
                    )
                )
            )
    msgs.append(pb.ClientMessage(end=pb.RequestEnd(request_id=rid)))
    return msgs


def sidecar_rate(target: str, lm, rows, n_tok: int, streams: int, requests_per_stream: int) -> float:
    """Tokens/s (rows of all layers) through ``streams`` concurrent Stream RPCs."""
    per_stream = [
        [
            request_messages(f"s{s}-r{r}-{time.monotonic_ns()}", lm.model_id, rows, n_tok)
            for r in range(requests_per_stream)
        ]
        for s in range(streams)
    ]
    with grpc.insecure_channel(target) as ch:
        stub = pb_grpc.MonitorStub(ch)
        barrier = threading.Barrier(streams + 1)

        def run(msgs_list):
            barrier.wait()
            for msgs in msgs_list:
                list(stub.Stream(iter(msgs)))

        threads = [threading.Thread(target=run, args=(m,)) for m in per_stream]
        for t in threads:
            t.start()
        barrier.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t0
    return streams * requests_per_stream * n_tok * len(HOOKS) / elapsed


def bare_encode_rate(rows, n_tok: int, repeats: int) -> tuple[float, int]:
    """The SAE encode's matmul + top-k alone, on the sidecar's core with one thread, at its best batch size."""
    saes = [load_sae(h, sae_dirs()) for h in ("smollm2-135m-instruct-l12", *EXTRA_SAES)]
    W = [(s.sae.W_enc.detach(), s.sae.b_enc.detach(), s.sae.cfg.k) for s in saes]
    best = (0.0, 0)
    with torch.no_grad():
        for batch in (16, 64, 256, 512, 1024):
            x = {h: rows[h][1 : n_tok + 1].repeat((batch + n_tok - 1) // n_tok, 1)[:batch] for h in HOOKS}
            t = time.perf_counter()
            n = 0
            while time.perf_counter() - t < 1.0 * repeats:
                for (w, b, k), h in zip(W, HOOKS, strict=True):
                    torch.topk(x[h] @ w + b, k, dim=-1)
                    n += batch
            rate = n / (time.perf_counter() - t)
            best = max(best, (rate, batch))
    return best


def bench_scoring(lm, target: str, args) -> None:
    ct = tokenize_chat(lm.tokenizer, [{"role": "user", "content": PROMPT}])
    rows = residual_rows(lm, ct.input_ids * 4, HOOKS)  # ~200 tokens of real activations per layer
    n_tok = rows[HOOKS[0]].shape[0] - 1
    sidecar_rate(target, lm, rows, n_tok, 4, 1)  # warm-up
    rates = {s: sidecar_rate(target, lm, rows, n_tok, s, max(1, 64 // s) * args.repeats) for s in (1, 4, 16, 64)}
    mine = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    if mine is not None:
        os.sched_setaffinity(0, {SIDECAR_CORE})  # the sidecar's core, idle now
    try:
        bare, best_batch = bare_encode_rate(rows, n_tok, args.repeats)
    finally:
        if mine is not None:
            os.sched_setaffinity(0, mine)
    print(
        f"(b) scoring: sidecar {rates[16]:.0f} tok/s with 16 streams vs bare encode matmul {bare:.0f} tok/s "
        f"(best batch {best_batch}, same core) -> ratio {rates[16] / bare:.3f} (target >= 0.8)",
        flush=True,
    )
    for s in (1, 4, 64):
        print(
            f"(b) scoring: sidecar {rates[s]:.0f} tok/s with {s} stream{'s' * (s > 1)} -> ratio {rates[s] / bare:.3f}",
            flush=True,
        )
    return rows


def bench_latency(lm, target: str, rows, args) -> None:
    """Open loop: one 16-token Score RPC every 16 ms (1,000 tokens/s), latency from when it was due."""
    rate_tokens, n = 1000.0, 50 * 2 * args.repeats * 3
    interval = CHUNK / rate_tokens
    acts = to_wire(rows[HOOKS[0]][1 : CHUNK + 1])

    def req(i: int) -> pb.ScoreRequest:
        rid = f"lat-{i}-{time.monotonic_ns()}"
        spans = [pb.Span(role=pb.SPAN_ROLE_USER, start=1, end=CHUNK + 1)]
        return pb.ScoreRequest(
            start=pb.RequestStart(request_id=rid, model_id=lm.model_id, spans=spans),
            chunks=[pb.ActivationChunk(request_id=rid, hook_name=HOOKS[0], start_position=1, activations=acts)],
        )

    lat: list[float] = []
    with grpc.insecure_channel(target) as ch:
        stub = pb_grpc.MonitorStub(ch)
        for i in range(20):
            stub.Score(req(i))  # warm-up
        # The load generator's own collector pauses would delay sends and count as latency.
        gc.collect()
        gc.disable()
        t0 = time.perf_counter() + 0.05
        futures = []
        for i in range(n):
            due = t0 + i * interval
            time.sleep(max(0.0, due - time.perf_counter()))
            f = stub.Score.future(req(i))
            f.add_done_callback(lambda _f, due=due: lat.append(time.perf_counter() - due))
            futures.append(f)
        for f in futures:
            f.result()
        gc.enable()
    lat.sort()
    p50, p99 = lat[len(lat) // 2], lat[int(len(lat) * 0.99) - 1]
    print(
        f"(c) latency at {rate_tokens:.0f} tokens/s offered: chunk -> verdicts p50 {p50 * 1e3:.2f} ms, "
        f"p99 {p99 * 1e3:.2f} ms over {len(lat)} Score RPCs (target p99 <= 25 ms)",
        flush=True,
    )


def score_set(n: int) -> list[tuple[str, dict]]:
    rows = read_rows(DATA_DIR / "responses.jsonl")[:n]
    return [
        (f"r{i}", {"messages": [{"role": "user", "content": r["prompt"]}], "response": r["response"]})
        for i, r in enumerate(rows)
    ]


@torch.no_grad()
def bare_truncated_forward(lm, seqs: list[list[int]], batch_size: int) -> None:
    """The forward alone, batched and padded as score does, stopped at the deepest hooked layer."""

    class Stop(Exception):
        pass

    def stop(*_):
        raise Stop

    handle = lm.model.get_submodule(last_hook(lm.model, HOOKS)).register_forward_hook(stop)
    pad = lm.tokenizer.pad_token_id
    order = sorted(seqs, key=len)
    try:
        for b in range(0, len(order), batch_size):
            batch = order[b : b + batch_size]
            width = max(map(len, batch))
            ids = torch.tensor([s + [pad] * (width - len(s)) for s in batch])
            mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in batch])
            with contextlib.suppress(Stop):
                lm.model(ids, attention_mask=mask, use_cache=False)
    finally:
        handle.remove()


def bench_score(lm, args) -> None:
    engine = Engine.from_specs()
    records = score_set(128)
    seqs = [tokenize_chat(lm.tokenizer, r["messages"], response=r["response"]).input_ids for _, r in records]
    tokens = sum(map(len, seqs))
    score_records(engine, lm, records[:8])  # warm-up
    bare, ours = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        bare_truncated_forward(lm, seqs, 8)
        bare.append(tokens / (time.perf_counter() - t))
        t = time.perf_counter()
        score_records(engine, lm, records, 8)
        ours.append(tokens / (time.perf_counter() - t))
    b, o = statistics.median(bare), statistics.median(ours)
    print(
        f"(d) score: {o:.0f} tok/s vs bare batched forward to {last_hook(lm.model, HOOKS)} {b:.0f} tok/s "
        f"-> ratio {o / b:.3f} (target >= 0.8); {len(records)} records, {tokens} tokens, batch 8",
        flush=True,
    )


def bench_ray(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "records.jsonl"
        data.write_text("".join(json.dumps({"id": rid, **rec}) + "\n" for rid, rec in score_set(200)))
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        cli = [sys.executable, "-m", "latentwatch.cli", "score", str(data), "-o", os.devnull]
        rates = {}
        for name, extra in (
            ("single process", []),
            ("ray, 1 worker", ["--ray", "--workers", "1"]),
            ("ray, 2 workers", ["--ray", "--workers", "2"]),
        ):
            t = time.perf_counter()
            subprocess.run(cli + extra, check=True, env=env, capture_output=True, timeout=1800)
            rates[name] = 200 / (time.perf_counter() - t)
        base = rates["single process"]
        print(
            "(e) score --ray (200 records, whole command incl. model load and Ray start): "
            + ", ".join(f"{k} {v:.2f} records/s ({v / base:.2f}x)" for k, v in rates.items()),
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--port", type=int, default=50077)
    ap.add_argument("--no-ray", action="store_true")
    args = ap.parse_args()

    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {0})
    torch.set_num_threads(1)
    lm = load_model()
    sidecar = start_sidecar(
        args.port,
        {
            "LATENTWATCH_SAES": ",".join(EXTRA_SAES),
            "LATENTWATCH_METRICS_PORT": "none",
            "LATENTWATCH_SQLITE_PATH": "/tmp/latentwatch-bench.sqlite",
        },
    )
    target = f"127.0.0.1:{args.port}"
    try:
        bench_generation(lm, target, args)
        rows = bench_scoring(lm, target, args)
        bench_latency(lm, target, rows, args)
    finally:
        sidecar.terminate()
        sidecar.wait(10)
        Path("/tmp/latentwatch-bench.sqlite").unlink(missing_ok=True)
    bench_score(lm, args)
    if not args.no_ray:
        bench_ray(args)
    print("(f) GPU: none lent to this run; the GPU figures need the device machine", flush=True)


if __name__ == "__main__":
    main()
