"""Capture hooks against HF's own output_hidden_states, and fail-open sending."""

from __future__ import annotations

import itertools

import pytest
import torch
from latentwatch.capture import GrpcMonitorClient, HFCapture
from latentwatch.capture.chat import tokenize_chat
from latentwatch.capture.metrics import CaptureCollector
from latentwatch.capture.teacher_forced import residual_rows
from latentwatch.detectors.base import Span
from latentwatch.v1 import monitor_pb2 as pb
from prometheus_client import CollectorRegistry, generate_latest

from .conftest import free_port

# Capture during generate (KV cache, one token per step) vs one full forward
# over the same tokens: the same math in a different order, so fp32 rounding
# differs slightly. Residual norms here are O(10-100); 1e-3 absolute is tight.
ATOL = 1e-3


class Recorder:
    """A monitor that keeps what it is given, to compare rows exactly."""

    def __init__(self):
        self.rows: dict[str, list[tuple[int, torch.Tensor]]] = {}
        self.ids: dict[str, list[int]] = {}
        self.events: list[str] = []

    def start_request(self, request_id, spans):
        self.events.append(f"start:{request_id}")

    def send_chunk(self, request_id, hook_name, start_position, rows, text=(), ids=()):
        self.rows.setdefault(hook_name, []).append((start_position, rows))
        assert len(ids) == rows.shape[0]
        self.ids.setdefault(hook_name, []).extend(ids)

    def end_request(self, request_id):
        self.events.append(f"end:{request_id}")


def test_captured_rows_equal_hf_hidden_states(lm):
    layers = [3, 12]
    hooks = [f"model.layers.{i}" for i in layers]
    rec = Recorder()
    cap = HFCapture(lm.model, hooks, rec)
    ct = tokenize_chat(lm.tokenizer, [{"role": "user", "content": "Name three rivers in Europe."}])
    try:
        with cap.request("r1", ct.spans), torch.no_grad():
            out = lm.model.generate(
                torch.tensor([ct.input_ids]), max_new_tokens=12, do_sample=False, pad_token_id=lm.tokenizer.pad_token_id
            )
    finally:
        cap.remove()
    assert rec.events == ["start:r1", "end:r1"]
    with torch.no_grad():
        hs = lm.model(out, output_hidden_states=True).hidden_states
    for layer, hook in zip(layers, hooks, strict=True):
        chunks = rec.rows[hook]
        # prefill arrives as one chunk, then one row per generated token, in order
        assert chunks[0][0] == 0 and chunks[0][1].shape[0] == len(ct.input_ids)
        assert [s for s, _ in chunks] == [0] + list(range(len(ct.input_ids), out.shape[1] - 1))
        got = torch.cat([r for _, r in chunks])
        want = hs[layer + 1][0, : got.shape[0]]  # hidden_states[i + 1] is the output of layer i
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
        assert rec.ids[hook] == out[0, : got.shape[0]].tolist()  # each row with its token's id


def test_client_never_blocks_and_counts_drops_when_sidecar_is_absent():
    # Nothing listens on this port: the sender keeps retrying in the background.
    client = GrpcMonitorClient(f"127.0.0.1:{free_port()}", "m", max_buffer=8, backoff_initial_s=0.05)
    try:
        client.start_request("r", [Span(pb.SPAN_ROLE_USER, 1, 3)])
        for i in range(50):
            client.send_chunk("r", "model.layers.12", i, torch.zeros(1, 576))
        assert client.dropped == 42
        for i in range(40):  # starts and ends are bounded as well (4 x max_buffer)
            client.end_request(f"r{i}")
        assert client.dropped_control == 40 + 1 - 4 * 8
        registry = CollectorRegistry()
        registry.register(CaptureCollector(client))
        exported = generate_latest(registry).decode()
        assert 'latentwatch_capture_chunks_dropped_total{reason="buffer_full"} 42.0' in exported
        assert "latentwatch_capture_control_messages_dropped_total 9.0" in exported
    finally:
        client.close(flush_timeout=0.1)


def test_local_monitor_flags_a_harmful_generation_in_process(lm):
    from latentwatch.capture import LocalMonitor
    from latentwatch.sidecar.engine import Engine

    from .conftest import BENIGN, HARMFUL

    monitor = LocalMonitor(Engine.from_specs(), lm.model_id)
    cap = HFCapture(lm.model, monitor.engine.hook_names, monitor)
    results = {}
    try:
        for rid, prompt in (("harm", HARMFUL), ("ok", BENIGN)):
            ct = tokenize_chat(lm.tokenizer, [{"role": "user", "content": prompt}])
            spans = ct.spans + [Span(pb.SPAN_ROLE_RESPONSE, ct.prompt_length, 0)]
            with cap.request(rid, spans), torch.no_grad():
                lm.model.generate(
                    torch.tensor([ct.input_ids]),
                    max_new_tokens=4,
                    do_sample=False,
                    pad_token_id=lm.tokenizer.pad_token_id,
                )
            results[rid] = {v.detector: v for v in monitor.wait_final(rid, timeout=1)}
    finally:
        cap.remove()
    assert results["harm"]["harmful_request"].flagged
    assert not results["ok"]["harmful_request"].flagged


def test_sender_coalesces_adjacent_rows_when_the_sidecar_lags():
    from latentwatch.capture.client import _Rows

    client = GrpcMonitorClient(f"127.0.0.1:{free_port()}", "m", max_buffer=64, max_rows_per_chunk=4)
    try:
        with client._cv:  # hold the lock so nothing is sent while we queue
            for pos in range(6):
                for hook in ("a", "b"):
                    row = torch.full((1, 2), float(pos))
                    rows = _Rows("r", hook, pos, row, text=(f"{hook}{pos}",), ids=(100 + pos,))
                    client._buf.append((rows, True))
                    client._chunks_buffered += 1
            first = client._buf.popleft()[0]
            client._chunks_buffered -= 1
            merged = client._coalesce(first)
            remaining = [e[0][:3] for e in client._buf]
        assert merged[:3] == ("r", "a", 0) and merged.rows[:, 0].tolist() == [0, 1, 2, 3]
        assert merged.text == ("a0", "a1", "a2", "a3")  # token text stays aligned with its rows
        assert list(merged.ids) == [100, 101, 102, 103]  # and so do token ids (else the sidecar refuses the chunk)
        # rows of the other hook stay queued in order, and a's rows 4-5 wait for the next message
        b = [("r", "b", i) for i in range(4)]
        assert remaining[:6] == [*b, ("r", "a", 4), ("r", "b", 4)]
        assert client._chunks_buffered == len(client._buf)
    finally:
        client.close(flush_timeout=0.1)


def test_low_confidence_marks_activations_the_sae_cannot_explain(lm):
    """The health signal: ordinary text stays confident; the same rows under a
    fixed random rotation (same norms, but not the basis the SAE learned, as
    after a weight swap under the monitor) are marked low-confidence."""
    from latentwatch.capture import LocalMonitor
    from latentwatch.sidecar.engine import Engine

    from .conftest import BENIGN, transcript

    monitor = LocalMonitor(Engine.from_specs(), lm.model_id)
    spans, rows = transcript(lm, BENIGN, ["model.layers.12"])
    x = rows["model.layers.12"]
    q, _ = torch.linalg.qr(torch.randn(x.shape[1], x.shape[1], generator=torch.Generator().manual_seed(0)))
    verdicts = {}
    for rid, acts in (("normal", x), ("rotated", x @ q)):
        monitor.start_request(rid, spans)
        for i in range(acts.shape[0]):  # one row per chunk, as during decoding
            monitor.send_chunk(rid, "model.layers.12", i, acts[i : i + 1])
        monitor.end_request(rid)
        verdicts[rid] = monitor.wait_final(rid, 1)[0]
    assert not verdicts["normal"].low_confidence
    assert verdicts["rotated"].low_confidence


def test_final_verdicts_nobody_waits_for_are_not_kept_forever():
    from latentwatch.capture.finals import Finals as _Finals
    from latentwatch.detectors.records import Verdict

    finals = _Finals(keep=3)
    for i in range(5):
        finals.add(Verdict(f"r{i}", "d", 0.1, 0.5, False, 1, 2, final=True))
        finals.done(f"r{i}")
    assert finals.wait("r0", timeout=0) is None and finals.wait("r1", timeout=0) is None  # evicted
    assert [v.request_id for v in finals.wait("r4", timeout=0)] == ["r4"]
    assert len(finals._verdicts) == 2


class BatchRecorder:
    """A monitor that keeps each request's rows per hook, to compare with batch-1 forwards."""

    def __init__(self):
        self.rows: dict[tuple[str, str], list[tuple[int, torch.Tensor]]] = {}
        self.text: dict[str, list[str]] = {}
        self.events: list[str] = []

    def start_request(self, request_id, spans):
        self.events.append(f"start:{request_id}")

    def send_chunk(self, request_id, hook_name, start_position, rows, text=(), ids=()):
        self.rows.setdefault((request_id, hook_name), []).append((start_position, rows))
        self.text.setdefault(request_id, []).extend(text)

    def send_attention(self, request_id, start_position, heads, lookback):
        raise AssertionError("no heads were asked for")

    def end_request(self, request_id):
        self.events.append(f"end:{request_id}")


def test_batched_generation_captures_each_row_as_its_batch_1_forward(lm):
    """generate with batch 3, left padding and rows that stop early: each request gets exactly
    the rows (positions and values) of a batch-1 forward over its own prompt and answer."""
    hooks = ["model.layers.3", "model.layers.12"]
    prompts = [
        "Name three colours.",
        "Explain in two sentences why the sky is blue, and mention Rayleigh scattering by name.",
        "Hi",
    ]
    cts = [tokenize_chat(lm.tokenizer, [{"role": "user", "content": p}]) for p in prompts]
    period = lm.tokenizer.encode(".")[0]
    stops = [lm.tokenizer.eos_token_id, period]  # a sentence end stops a row early, so rows finish apart
    width = max(len(ct.input_ids) for ct in cts)
    ids = torch.tensor([[lm.tokenizer.pad_token_id] * (width - len(ct.input_ids)) + ct.input_ids for ct in cts])
    mask = torch.tensor([[0] * (width - len(ct.input_ids)) + [1] * len(ct.input_ids) for ct in cts])
    rec = BatchRecorder()
    capture = HFCapture(lm.model, hooks, rec, tokenizer=lm.tokenizer, stop_ids=stops)
    try:
        with torch.no_grad(), capture.requests([(f"r{i}", ct.spans) for i, ct in enumerate(cts)], mask):
            out = lm.model.generate(ids, attention_mask=mask, max_new_tokens=20, do_sample=False,
                                    eos_token_id=stops, pad_token_id=lm.tokenizer.pad_token_id)  # fmt: skip
    finally:
        capture.remove()
    assert rec.events == ["start:r0", "start:r1", "start:r2", "end:r0", "end:r1", "end:r2"]
    finished_early = 0
    for i, ct in enumerate(cts):
        answer = out[i, width:].tolist()
        k = next((j for j, t in enumerate(answer) if t in stops), len(answer) - 1)
        finished_early += k < len(answer) - 1
        fed = ct.input_ids + answer[:k]  # every token the model read before the row stopped
        want = residual_rows(lm, fed, hooks)
        for hook in hooks:
            chunks = rec.rows[(f"r{i}", hook)]
            assert [s for s, _ in chunks] == list(itertools.accumulate([0] + [r.shape[0] for _, r in chunks[:-1]]))
            got = torch.cat([r for _, r in chunks])
            assert got.shape == want[hook].shape, (i, hook)
            assert torch.allclose(got, want[hook], atol=ATOL, rtol=1e-4), (i, hook, (got - want[hook]).abs().max())
        assert rec.text[f"r{i}"] == [lm.tokenizer.decode([t]) for t in fed]
    assert finished_early >= 1  # the early-stop path ran


def test_batched_capture_refuses_right_padding_and_a_wrong_batch(lm):
    rec = BatchRecorder()
    capture = HFCapture(lm.model, ["model.layers.3"], rec)
    try:
        right = torch.tensor([[1, 1, 0], [1, 1, 1]])
        with pytest.raises(ValueError, match="left padding"):
            with capture.requests([("a", []), ("b", [])], right):
                pass
        with pytest.raises(ValueError, match="batch 1"):
            with torch.no_grad(), capture.requests([("a", []), ("b", [])]):
                lm.model(torch.tensor([[1, 2, 3]]))
    finally:
        capture.remove()
