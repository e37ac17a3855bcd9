"""Capture hooks against HF's own output_hidden_states, and fail-open sending."""

from __future__ import annotations

import torch
from latentwatch.capture import GrpcMonitorClient, HFCapture
from latentwatch.capture.chat import tokenize_chat
from latentwatch.capture.metrics import CaptureCollector
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
        self.events: list[str] = []

    def start_request(self, request_id, spans):
        self.events.append(f"start:{request_id}")

    def send_chunk(self, request_id, hook_name, start_position, rows, text=()):
        self.rows.setdefault(hook_name, []).append((start_position, rows))

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
                    rows = _Rows("r", hook, pos, torch.full((1, 2), float(pos)), text=(f"{hook}{pos}",))
                    client._buf.append((rows, True))
                    client._chunks_buffered += 1
            first = client._buf.popleft()[0]
            client._chunks_buffered -= 1
            merged = client._coalesce(first)
            remaining = [e[0][:3] for e in client._buf]
        assert merged[:3] == ("r", "a", 0) and merged.rows[:, 0].tolist() == [0, 1, 2, 3]
        assert merged.text == ("a0", "a1", "a2", "a3")  # token text stays aligned with its rows
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
