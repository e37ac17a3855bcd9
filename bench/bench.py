"""latentwatch benchmark: every target is a ratio measured side by side in one run.

(a) generation tokens/s with capture on vs off (two layers captured, sent to
    a real sidecar process over gRPC); target >= 0.95.
(b) sidecar scoring throughput (tokens/s through the Stream RPC, SAE encode +
    detectors + verdicts) vs a bare torch matmul + top-k of the same SAE
    encode shapes; target >= 0.5.
(c) p50 / p99 latency of a Score RPC round trip for one 16-token chunk.

The sidecar runs as its own process pinned to one core and generation to the
other, as they would sit on separate cores in production; on a 2-core box
sharing cores would measure CPU contention, not capture overhead.
Run: python bench/bench.py [--new-tokens 64] [--repeats 5]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from pathlib import Path

import grpc
import torch
from latentwatch.capture import GrpcMonitorClient, HFCapture
from latentwatch.capture.chat import tokenize_chat
from latentwatch.capture.teacher_forced import residual_rows
from latentwatch.detectors.packs import sae_dirs
from latentwatch.detectors.saes import load_sae
from latentwatch.models import load_model
from latentwatch.v1 import monitor_pb2 as pb
from latentwatch.v1 import monitor_pb2_grpc as pb_grpc
from latentwatch.wire.codec import to_wire
from sidecar_process import start_sidecar

HOOKS = ["model.layers.12", "model.layers.20"]
EXTRA_SAES = ["smollm2-135m-instruct-l20"]
PROMPT = "Write a detailed explanation of how a bicycle gear system works."


def generation_rate(lm, ids, new_tokens: int, capture: HFCapture | None, spans) -> float:
    monitored = capture.request(f"bench-{time.monotonic_ns()}", spans) if capture else contextlib.nullcontext()
    t = time.perf_counter()
    with torch.no_grad(), monitored:
        out = lm.model.generate(
            ids,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=lm.tokenizer.pad_token_id,
        )
    return (out.shape[1] - ids.shape[1]) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--port", type=int, default=50077)
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
        # (a) capture on vs off, interleaved so drift hits both alike
        ct = tokenize_chat(lm.tokenizer, [{"role": "user", "content": PROMPT}])
        ids = torch.tensor([ct.input_ids])
        client = GrpcMonitorClient(target, lm.model_id, max_buffer=4096)
        client.wait_connected(30)
        capture = HFCapture(lm.model, HOOKS, client)
        generation_rate(lm, ids, 8, None, ct.spans)  # warm-up
        off, on = [], []
        for _ in range(args.repeats):
            off.append(generation_rate(lm, ids, args.new_tokens, None, ct.spans))
            on.append(generation_rate(lm, ids, args.new_tokens, capture, ct.spans))
        client.close()
        capture.remove()
        off_r, on_r = statistics.median(off), statistics.median(on)
        print(
            f"(a) generation: capture off {off_r:.1f} tok/s, on {on_r:.1f} tok/s "
            f"({len(HOOKS)} layers) -> ratio {on_r / off_r:.3f} (target >= 0.95); client drops {client.dropped}"
        )

        # (b) sidecar scoring throughput vs bare SAE-encode matmul
        rows = residual_rows(lm, ct.input_ids * 8, HOOKS)  # ~400 tokens of real activations per layer
        n_tok = rows[HOOKS[0]].shape[0] - 1
        chunk = 16
        msgs = [
            pb.ClientMessage(
                start=pb.RequestStart(
                    request_id="tp", model_id=lm.model_id, spans=[pb.Span(role=pb.SPAN_ROLE_USER, start=1, end=n_tok)]
                )
            )
        ]
        for h in HOOKS:
            for i in range(1, n_tok + 1, chunk):
                msgs.append(
                    pb.ClientMessage(
                        chunk=pb.ActivationChunk(
                            request_id="tp", hook_name=h, start_position=i, activations=to_wire(rows[h][i : i + chunk])
                        )
                    )
                )
        msgs.append(pb.ClientMessage(end=pb.RequestEnd(request_id="tp")))
        with grpc.insecure_channel(target) as ch:
            stub = pb_grpc.MonitorStub(ch)
            list(stub.Stream(iter(msgs)))  # warm-up
            t = time.perf_counter()
            for _ in range(args.repeats):
                list(stub.Stream(iter(msgs)))
            side_tps = args.repeats * n_tok * len(HOOKS) / (time.perf_counter() - t)

            saes = [load_sae(h, sae_dirs()) for h in ("smollm2-135m-instruct-l12", *EXTRA_SAES)]
            W = [(s.sae.W_enc.detach(), s.sae.b_enc.detach(), s.sae.cfg.k) for s in saes]
            t = time.perf_counter()
            with torch.no_grad():
                for _ in range(args.repeats):
                    for (w, b, k), h in zip(W, HOOKS, strict=True):
                        for i in range(1, n_tok + 1, chunk):
                            torch.topk(rows[h][i : i + chunk] @ w + b, k, dim=-1)
            bare_tps = args.repeats * n_tok * len(HOOKS) / (time.perf_counter() - t)
            print(
                f"(b) scoring: sidecar {side_tps:.0f} tok/s vs bare encode matmul {bare_tps:.0f} tok/s "
                f"-> ratio {side_tps / bare_tps:.3f} (target >= 0.5); chunks of {chunk} rows, sidecar on 1 core"
            )

            # (c) chunk -> verdict latency through the Score RPC
            req = pb.ScoreRequest(
                start=pb.RequestStart(
                    request_id="lat", model_id=lm.model_id, spans=[pb.Span(role=pb.SPAN_ROLE_USER, start=1, end=17)]
                ),
                chunks=[
                    pb.ActivationChunk(
                        request_id="lat",
                        hook_name=HOOKS[0],
                        start_position=1,
                        activations=to_wire(rows[HOOKS[0]][1:17]),
                    )
                ],
            )
            lat = []
            for i in range(200):
                req.start.request_id = f"lat-{i}"
                t = time.perf_counter()
                stub.Score(req)
                lat.append(time.perf_counter() - t)
            lat.sort()
            print(
                f"(c) latency: 16-token chunk -> verdicts p50 {lat[100] * 1e3:.2f} ms, "
                f"p99 {lat[197] * 1e3:.2f} ms over {len(lat)} Score RPCs"
            )
    finally:
        sidecar.terminate()
        sidecar.wait(10)
        Path("/tmp/latentwatch-bench.sqlite").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
