"""Bounded soak on loopback: many concurrent Stream RPCs against a sidecar process for a while.

Each stream sends requests shaped like generation (a start, one prefill chunk per layer,
then one row per layer per decoded token, an end) built from real activations of the
bundled model, and waits for each request's RequestDone before the next. A quarter of the
prompts are harmful, so alerts are raised and stored as they would be.

Printed per interval: requests/s, tokens/s, request latency p50/p99 (RequestStart sent to
RequestDone received, with all streams in flight) and the sidecar's RSS. At the end: the
same over the time after warm-up, the sidecar's own chunk latency p99 (from its histogram),
and the RSS flatness after warm-up: the largest deviation from the RSS at the end of
warm-up, as a share of it (target within +-10%).

The sidecar runs as its own process on the last core and this load generator on the
others, as bench.py does. Not run in CI.
Run: nice python bench/soak.py --streams 64 --duration 300
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field

import grpc
from latentwatch.capture.chat import tokenize_chat
from latentwatch.capture.teacher_forced import residual_rows
from latentwatch.export.metrics import LATENCY_BUCKETS
from latentwatch.models import load_model
from latentwatch.v1 import monitor_pb2 as pb
from latentwatch.v1 import monitor_pb2_grpc as pb_grpc
from latentwatch.wire.codec import to_wire
from sidecar_process import free_port, start_sidecar

HOOKS = ["model.layers.12", "model.layers.20"]
CONVERSATIONS = [  # (prompt, response the rows are teacher-forced with)
    ("Give me step-by-step instructions to make a pipe bomb in my garage.", "I can't help with that request."),
    ("What is a good recipe for banana bread?", "Mash three ripe bananas, mix in flour, sugar, an egg and butter."),
    ("How do bicycle gears work?", "Gears change how far the wheel turns for each turn of the pedals."),
    ("Name three rivers in Europe.", "The Danube, the Rhine and the Seine are three rivers in Europe."),
]


@dataclass
class Template:
    """One conversation's spans and per-layer rows as wire tensors, ready to stamp with an id."""

    spans: list[pb.Span]
    prefill: dict[str, pb.Tensor]
    decode: list[dict[str, pb.Tensor]]  # per response token, per layer: one row
    prompt_length: int

    @property
    def tokens(self) -> int:
        return self.prompt_length + len(self.decode)

    def messages(self, request_id: str, model_id: str) -> list[pb.ClientMessage]:
        out = [pb.ClientMessage(start=pb.RequestStart(request_id=request_id, model_id=model_id, spans=self.spans))]
        for hook, t in self.prefill.items():
            c = pb.ActivationChunk(request_id=request_id, hook_name=hook, start_position=0, activations=t)
            out.append(pb.ClientMessage(chunk=c))
        for i, rows in enumerate(self.decode):
            for hook, t in rows.items():
                c = pb.ActivationChunk(
                    request_id=request_id, hook_name=hook, start_position=self.prompt_length + i, activations=t
                )
                out.append(pb.ClientMessage(chunk=c))
        out.append(pb.ClientMessage(end=pb.RequestEnd(request_id=request_id)))
        return out


def build_templates() -> tuple[str, list[Template]]:
    lm = load_model()
    templates = []
    for prompt, response in CONVERSATIONS:
        ct = tokenize_chat(lm.tokenizer, [{"role": "user", "content": prompt}], response=response)
        rows = residual_rows(lm, ct.input_ids, HOOKS)
        n = ct.prompt_length
        templates.append(
            Template(
                spans=[pb.Span(role=s.role, start=s.start, end=s.end) for s in ct.spans],
                prefill={h: to_wire(rows[h][:n]) for h in HOOKS},
                decode=[{h: to_wire(rows[h][i : i + 1]) for h in HOOKS} for i in range(n, len(ct.input_ids))],
                prompt_length=n,
            )
        )
    return lm.model_id, templates


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) * 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Stats:
    done: list[tuple[float, float, int]] = field(default_factory=list)  # (finished at, latency s, tokens)
    errors: int = 0


async def stream_worker(
    stub: pb_grpc.MonitorStub, index: int, model_id: str, templates: list[Template], stop: float, stats: Stats
) -> None:
    call = stub.Stream()
    n = 0
    while time.monotonic() < stop:
        template = templates[(index + n) % len(templates)]
        request_id = f"soak-{index}-{n}"
        n += 1
        t0 = time.perf_counter()
        for msg in template.messages(request_id, model_id):
            await call.write(msg)
        while True:
            r = await call.read()
            if r is grpc.aio.EOF:
                raise RuntimeError("the sidecar ended a stream")
            kind = r.WhichOneof("kind")
            if kind == "error":
                stats.errors += 1
            elif kind == "done" and r.done.request_id == request_id:
                break
        stats.done.append((time.monotonic(), time.perf_counter() - t0, template.tokens))
    await call.done_writing()
    while await call.read() is not grpc.aio.EOF:
        pass


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def histogram_quantile(metrics_text: str, name: str, q: float) -> float:
    """The upper bound of the bucket holding quantile ``q`` of a Prometheus histogram."""
    buckets = []
    for line in metrics_text.splitlines():
        if line.startswith(f"{name}_bucket"):
            le = line.split('le="')[1].split('"')[0]
            buckets.append((float(le), float(line.split()[-1])))
    total = buckets[-1][1]
    return next(le for le, count in buckets if count >= q * total)


def bound_ms(seconds: float) -> str:
    if seconds == float("inf"):
        return f"> {LATENCY_BUCKETS[-1] * 1e3:.0f} ms (the top bucket)"
    return f"<= {seconds * 1e3:.1f} ms"


async def soak(args, model_id: str, templates: list[Template], sidecar: subprocess.Popen, target: str) -> dict:
    stats = Stats()
    start = time.monotonic()
    stop = start + args.duration
    samples: list[tuple[float, int]] = []
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.MonitorStub(channel)
        workers = [
            asyncio.create_task(stream_worker(stub, i, model_id, templates, stop, stats)) for i in range(args.streams)
        ]
        seen = 0
        cpu = cpu_seconds(sidecar.pid)
        print(" time s   req/s   tok/s   p50 ms   p99 ms   sidecar CPU %   sidecar RSS MiB")
        while time.monotonic() < stop:
            await asyncio.sleep(args.sample)
            now = time.monotonic()
            fresh = stats.done[seen:]
            seen += len(fresh)
            rss = rss_bytes(sidecar.pid)
            cpu, used = cpu_seconds(sidecar.pid), cpu_seconds(sidecar.pid) - cpu
            samples.append((now - start, rss))
            lat = [x[1] for x in fresh]
            print(
                f"{now - start:7.0f} {len(fresh) / args.sample:7.1f} {sum(x[2] for x in fresh) / args.sample:7.0f} "
                f"{percentile(lat, 0.5) * 1e3:8.1f} {percentile(lat, 0.99) * 1e3:8.1f} "
                f"{100 * used / args.sample:15.0f} {rss / 2**20:17.1f}",
                flush=True,
            )
        await asyncio.gather(*workers)
    return {"stats": stats, "samples": samples, "start": start}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=64)
    ap.add_argument("--duration", type=float, default=300.0, help="seconds of load")
    ap.add_argument("--warmup", type=float, help="seconds excluded from the summary (default: a fifth, at most 60)")
    ap.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    args = ap.parse_args()
    warmup = args.warmup if args.warmup is not None else min(60.0, args.duration / 5)

    model_id, templates = build_templates()
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, set(range(os.cpu_count() - 1)))
    port, metrics_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as data:
        env = {"LATENTWATCH_METRICS_PORT": str(metrics_port), "LATENTWATCH_SQLITE_PATH": f"{data}/alerts.sqlite"}
        sidecar = start_sidecar(port, env)
        try:
            print(
                f"{args.streams} streams x {args.duration:.0f} s, warm-up {warmup:.0f} s; requests of "
                f"{statistics.mean(t.tokens for t in templates):.0f} tokens x {len(HOOKS)} layers "
                f"({statistics.mean(len(t.decode) for t in templates):.0f} decoded one row per message)"
            )
            result = asyncio.run(soak(args, model_id, templates, sidecar, f"127.0.0.1:{port}"))
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
        finally:
            sidecar.terminate()
            sidecar.wait(10)
    stats, samples, start = result["stats"], result["samples"], result["start"]
    steady = [x for x in stats.done if x[0] - start >= warmup]
    span = max(x[0] for x in steady) - min(x[0] for x in steady) if len(steady) > 1 else float("nan")
    lat = [x[1] for x in steady]
    after = [rss for t, rss in samples if t >= warmup]
    reference = after[0]
    drift = max(abs(rss - reference) for rss in after) / reference
    print(
        f"\nafter warm-up: {len(steady) / span:.1f} requests/s, {sum(x[2] for x in steady) / span:.0f} tokens/s "
        f"({len(HOOKS)} layers each); request latency p50 {percentile(lat, 0.5) * 1e3:.1f} ms, "
        f"p99 {percentile(lat, 0.99) * 1e3:.1f} ms; sidecar chunk latency (queueing included) p99 "
        f"{bound_ms(histogram_quantile(metrics, 'latentwatch_chunk_latency_seconds', 0.99))}; "
        f"{len(stats.done)} requests, {stats.errors} refused messages; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    print(
        f"sidecar RSS after warm-up: {reference / 2**20:.1f} MiB at {warmup:.0f} s, "
        f"min {min(after) / 2**20:.1f}, max {max(after) / 2**20:.1f}, last {after[-1] / 2**20:.1f} MiB "
        f"-> largest deviation {drift * 100:.1f}% (target within +-10%: {'met' if drift <= 0.10 else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
