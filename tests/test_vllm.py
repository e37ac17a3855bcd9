"""latentwatch inside a real vLLM engine: an unmodified OpenAI-compatible server
(vLLM 0.32, CPU, bf16, eager) with the plugin enabled by environment only,
a real sidecar on a socket, a real redis-server. One server for the module.

The sidecar is the real one; a tap on its message handler records what
arrived, so rows captured inside vLLM can be compared with an HF forward of
the same tokens.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from latentwatch.capture.chat import tokenize_chat
from latentwatch.capture.teacher_forced import monitored_rows
from latentwatch.models import bundled_checkpoint
from latentwatch.sidecar.server import SidecarThread
from latentwatch.v1 import monitor_pb2 as pb
from latentwatch.wire.codec import from_wire

from .conftest import BENIGN, HARMFUL, free_port, make_config, wait_for
from .vllm_server import BLOCK, vllm_server
from .vllm_server import chat as vllm_chat

LAYERS = [12, 20]
HOOKS = [f"model.layers.{i}" for i in LAYERS]
HEADS = ["L3H0", "L14H5", "L27H8"]
MODEL = "smollm2-135m-instruct"  # its detector pack's name: the sidecar routes by it
CONTEXT = "The Varnholt Bridge, finished in 1931, was designed by the engineer Ilse Marquardt."
QUESTION = "Who designed the Varnholt Bridge?"

# vLLM computes in bf16 on CPU (its own kernels, fused add-norm); HF here in fp32.
# Per captured row, relative L2 error ||vllm - hf|| / ||hf|| (position 0 apart):
# measured median 1.0-1.4% per request and layer, worst row 6.9%; position 0
# (the attention sink) 0.08-0.3%. Bounds with about 2x margin:
ROW_REL_MEDIAN = 0.03
ROW_REL_MAX = 0.12
# Lookback ratios from bf16 queries and keys vs HF fp32 eager attention:
# measured worst absolute difference 0.004 over all positions and heads.
LOOKBACK_ATOL = 0.02


class Tap:
    """Records every message the real sidecar handles (it still handles them)."""

    def __init__(self, servicer):
        self.lock = threading.Lock()
        self.starts: dict[str, pb.RequestStart] = {}
        self.ends: set[str] = set()
        self.rows: dict[tuple[str, str], list[tuple[int, torch.Tensor]]] = {}
        self.ids: dict[tuple[str, str], dict[int, int]] = {}  # (request, hook) -> position -> token id
        self.lookback: dict[str, list[tuple[int, list[str], torch.Tensor]]] = {}
        self.chunks = 0
        original = servicer.handle_group

        def handle_group(batches):
            for batch in batches:
                for msg, _received in batch:
                    self.record(msg)
            return original(batches)

        servicer.batches._score = handle_group

    def record(self, msg: pb.ClientMessage) -> None:
        kind = msg.WhichOneof("kind")
        with self.lock:
            if kind == "start":
                self.starts[msg.start.request_id] = msg.start
            elif kind == "end":
                self.ends.add(msg.end.request_id)
            elif kind == "chunk":
                self.chunks += 1
                c = msg.chunk
                rows = from_wire(c.activations, c.activations.shape[1])
                self.rows.setdefault((c.request_id, c.hook_name), []).append((c.start_position, rows))
                ids = self.ids.setdefault((c.request_id, c.hook_name), {})
                ids.update(enumerate(c.token_ids, start=c.start_position))
            elif kind == "attention":
                a = msg.attention
                ratios = from_wire(a.lookback, len(a.heads), what="lookback")
                self.lookback.setdefault(a.request_id, []).append((a.start_position, list(a.heads), ratios))

    def stacked(self, request_id: str, hook: str) -> tuple[list[int], torch.Tensor]:
        with self.lock:
            parts = sorted(self.rows.get((request_id, hook), []), key=lambda p: p[0])
        positions = [p for start, r in parts for p in range(start, start + r.shape[0])]
        return positions, torch.cat([r for _, r in parts]).float()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, redis_url):
    """Sidecar (+ tap) and a vLLM OpenAI server with the plugin, for the whole module."""
    tmp = tmp_path_factory.mktemp("vllm")
    sidecar = SidecarThread(make_config(tmp, listen=f"127.0.0.1:{free_port()}", redis_url=redis_url))
    tap = Tap(sidecar.sidecar.servicer)
    env = {
        "LATENTWATCH_VLLM_SIDECAR": sidecar.address,
        "LATENTWATCH_VLLM_LAYERS": ",".join(map(str, LAYERS)),
        "LATENTWATCH_VLLM_HEADS": ",".join(HEADS),
        "LATENTWATCH_VLLM_ABORT": "harmful_request",
        "VLLM_SERVER_DEV_MODE": "1",  # /collective_rpc on loopback, to read the extension's counters
    }
    try:
        with vllm_server(tmp, bundled_checkpoint(), MODEL, env) as base:
            yield base, sidecar, tap
    finally:
        if not getattr(sidecar, "stopped", False):
            sidecar.stop()


def chat(base: str, messages: list[dict], max_tokens: int = 16, timeout: float = 300, **extra) -> dict:
    return vllm_chat(base, MODEL, messages, max_tokens, timeout, **extra)


def worker_stats(base: str) -> dict:
    """The capture counters of the worker extension (``latentwatch_stats`` via collective_rpc)."""
    req = urllib.request.Request(base + "/collective_rpc", json.dumps({"method": "latentwatch_stats"}).encode(),
                                 {"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(req, timeout=30) as r:
        (stats,) = json.loads(r.read())["results"]  # one worker: rank 0
    return stats


def _tokens(resp: dict) -> list[int]:
    """Every token the model ran a forward on: the prompt and all but the last sampled token."""
    return resp["prompt_token_ids"] + resp["choices"][0]["token_ids"][:-1]


def _rel_errors(got: torch.Tensor, want: torch.Tensor) -> torch.Tensor:
    return (got - want).norm(dim=-1) / want.norm(dim=-1)


def _assert_rows_match_hf(
    lm,
    tap: Tap,
    resp: dict,
    first: int = 0,
    hooks: list[str] = HOOKS,
    median: float = ROW_REL_MEDIAN,
    worst: float = ROW_REL_MAX,
) -> None:
    """The request's rows arrived once each, in order from ``first``, and match an HF forward."""
    rid = resp["id"]
    ids = _tokens(resp)
    wait_for(lambda: rid in tap.ends, 30, f"RequestEnd of {rid}")
    start = tap.starts[rid]
    spans = [pb.Span(role=s.role, start=s.start, end=s.end) for s in start.spans]
    want, _ = monitored_rows(lm, ids, spans, hooks, [])
    for hook in hooks:
        positions, got = tap.stacked(rid, hook)
        # every forwarded position exactly once, in order (an async-scheduling overshoot may add the last token)
        assert positions[: len(ids) - first] == list(range(first, len(ids))), (hook, positions[:8], len(ids))
        lo = max(first, 1)  # position 0, the attention sink (norm ~100x the others), is left out
        err = _rel_errors(got[lo - first : len(ids) - first], want[hook][lo:])
        assert err.median() < median and err.max() < worst, (hook, float(err.median()), float(err.max()))
        # each row came with the id of its token (what overlap-reading detectors count)
        got_ids = tap.ids[rid, hook]
        assert [got_ids.get(p) for p in range(first, len(ids))] == ids[first:], hook


def test_rows_captured_in_vllm_match_an_hf_forward(stack, lm):
    base, _, tap = stack
    resp = chat(base, [{"role": "user", "content": "Name three rivers in Europe."}], max_tokens=12)
    assert resp["id"] in tap.starts  # the id the client sees is the one the sidecar got
    ct = tokenize_chat(lm.tokenizer, [{"role": "user", "content": "Name three rivers in Europe."}])
    assert resp["prompt_token_ids"] == ct.input_ids
    got = [(s.role, s.start, s.end) for s in tap.starts[resp["id"]].spans]
    want = [(s.role, s.start, s.end) for s in ct.spans] + [(pb.SPAN_ROLE_RESPONSE, len(ct.input_ids), 0)]
    assert got == want  # span roles computed from the messages reached the sidecar
    _assert_rows_match_hf(lm, tap, resp)
    stats = worker_stats(base)
    assert stats["connected"] and stats["hook_errors"] == 0 and stats["dropped"] == 0
    assert stats["lookback_heads"] == HEADS


def test_concurrent_requests_of_different_lengths_stay_separate(stack, lm):
    base, _, tap = stack
    prompts = [
        "Hi.",
        "Explain in detail how a refrigerator moves heat from inside to outside, step by step, for a child.",
        BENIGN,
        "List the planets of the solar system in order from the sun, with one fact about each of them.",
    ]
    lengths = [20, 6, 14, 9]
    with ThreadPoolExecutor(len(prompts)) as pool:
        resps = list(pool.map(lambda p: chat(base, [{"role": "user", "content": p[0]}], max_tokens=p[1]),
                              zip(prompts, lengths, strict=True)))  # fmt: skip
    assert len({r["id"] for r in resps}) == len(resps)
    for resp in resps:
        _assert_rows_match_hf(lm, tap, resp)


def test_lookback_ratios_from_vllm_match_hf(stack, lm):
    base, _, tap = stack
    messages = [{"role": "user", "content": f"{CONTEXT}\n\n{QUESTION}"}]
    resp = chat(base, messages, max_tokens=12, vllm_xargs={"latentwatch_context": CONTEXT})
    rid = resp["id"]
    wait_for(lambda: rid in tap.ends, 30, f"RequestEnd of {rid}")
    ct = tokenize_chat(lm.tokenizer, messages, passage_text=CONTEXT)
    spans = list(tap.starts[rid].spans)
    assert [(s.role, s.start, s.end) for s in spans if s.role == pb.SPAN_ROLE_CONTEXT] == [
        (s.role, s.start, s.end) for s in ct.spans if s.role == pb.SPAN_ROLE_CONTEXT
    ]
    ids = _tokens(resp)
    _, want = monitored_rows(lm, ids, spans, [], HEADS)
    chunks = sorted(tap.lookback[rid], key=lambda c: c[0])
    assert all(heads == HEADS for _, heads, _ in chunks)
    positions = [p for s, _, r in chunks for p in range(s, s + r.shape[0])]
    assert positions[: len(ids)] == list(range(len(ids)))
    got = torch.cat([r for _, _, r in chunks])[: len(ids)]
    response_start = len(resp["prompt_token_ids"])
    diff = (got - want).abs()
    assert diff[response_start:].max() < LOOKBACK_ATOL, diff[response_start:].max(0)
    assert diff.max() < LOOKBACK_ATOL


def test_prefix_cached_prompt_rows_are_not_recomputed_and_lookback_still_matches(stack, lm):
    """A repeated prompt's leading blocks come from the prefix cache: their rows are never
    computed, so capture starts at the first computed position (documented); lookback ratios
    of the rest still match HF, because the cached blocks' keys are in the paged shadow."""
    base, _, tap = stack
    messages = [{"role": "user", "content": f"{CONTEXT}\n\n{QUESTION}"}]
    for _ in range(2):  # the second one hits the cache (the first may too, after the lookback test)
        resp = chat(base, messages, max_tokens=8, vllm_xargs={"latentwatch_context": CONTEXT})
    rid = resp["id"]
    wait_for(lambda: rid in tap.ends, 30, f"RequestEnd of {rid}")
    first = tap.stacked(rid, HOOKS[0])[0][0]
    assert first > 0 and first % BLOCK == 0  # whole blocks were served from the prefix cache
    assert worker_stats(base)["prefix_cached_positions"] >= first
    _assert_rows_match_hf(lm, tap, resp, first=first)
    ids = _tokens(resp)
    _, want = monitored_rows(lm, ids, list(tap.starts[rid].spans), [], HEADS)
    chunks = sorted(tap.lookback[rid], key=lambda c: c[0])
    assert chunks[0][0] == first
    got = torch.cat([r for _, _, r in chunks])[: len(ids) - first]
    assert (got - want[first:]).abs().max() < LOOKBACK_ATOL


def test_opted_out_request_is_not_captured(stack):
    base, _, tap = stack
    resp = chat(base, [{"role": "user", "content": BENIGN}], max_tokens=4, vllm_xargs={"latentwatch": "off"})
    time.sleep(1.0)
    assert resp["id"] not in tap.starts and not any(k[0] == resp["id"] for k in tap.rows)


def test_harmful_prompt_alerts_in_redis_with_the_client_id_and_is_aborted(stack, redis_url):
    import redis

    base, _, _ = stack
    resp = chat(base, [{"role": "user", "content": HARMFUL}], max_tokens=400)
    rid = resp["id"]
    client = redis.Redis.from_url(redis_url, decode_responses=True)

    def alert():
        return next(
            (
                f
                for _, f in client.xrange("latentwatch:alerts")
                if f["request_id"] == rid and f["detector"] == "harmful_request"
            ),
            None,
        )

    fields = wait_for(alert, 30, f"a harmful_request alert for {rid} in Redis")
    assert float(fields["score"]) >= float(fields["threshold"])
    choice = resp["choices"][0]
    # abort on harmful_request is configured: the request stops early and says why
    assert choice["finish_reason"] == "abort" and "harmful_request" in choice["stop_reason"], choice
    assert len(choice["token_ids"] or []) < 400


def test_killing_the_sidecar_mid_generation_neither_fails_nor_stalls_requests(stack):
    base, sidecar, tap = stack
    out: dict = {}

    def long_request():
        out["resp"] = chat(base, [{"role": "user", "content": "Write a long story about a lighthouse keeper."}],
                           max_tokens=160, ignore_eos=True)  # fmt: skip

    t = threading.Thread(target=long_request)
    seen = tap.chunks
    t.start()
    wait_for(lambda: tap.chunks >= seen + 10, 120, "the prefill and a few decode steps to reach the sidecar")
    sidecar.stop()  # mid-generation: the worker's stream breaks
    sidecar.stopped = True
    t.join(timeout=240)
    assert not t.is_alive(), "the request stalled after the sidecar went away"
    choice = out["resp"]["choices"][0]
    assert choice["finish_reason"] == "length" and len(choice["token_ids"]) == 160
    stats = worker_stats(base)
    assert not stats["connected"] and stats["hook_errors"] == 0
    # and the server keeps serving with no sidecar at all
    again = chat(base, [{"role": "user", "content": BENIGN}], max_tokens=8, timeout=120)
    assert again["choices"][0]["finish_reason"] in ("length", "stop")
