"""Serving on a unix socket, and a capture client that outlives its sidecar (stopped, or killed mid-generation)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import grpc
import torch
from latentwatch.capture import GrpcMonitorClient, HFCapture
from latentwatch.capture.chat import tokenize_chat
from latentwatch.capture.metrics import CaptureCollector
from latentwatch.sidecar.server import SidecarThread
from latentwatch.v1 import monitor_pb2_grpc as pb_grpc
from prometheus_client import CollectorRegistry, generate_latest
from transformers import StoppingCriteria, StoppingCriteriaList

from .conftest import HARMFUL, free_port, make_config, stream_messages, transcript, wait_for


def test_serves_on_a_unix_socket(tmp_path, lm):
    address = f"unix://{tmp_path}/lw.sock"
    sc = SidecarThread(make_config(tmp_path, listen=address))
    try:
        spans, rows = transcript(lm, HARMFUL, ["model.layers.12"])
        with grpc.insecure_channel(address) as ch:
            out = list(pb_grpc.MonitorStub(ch).Stream(stream_messages("u1", lm.model_id, spans, rows), timeout=60))
    finally:
        sc.stop()
    assert any(r.WhichOneof("kind") == "verdict" and r.verdict.flagged for r in out)


def _generate(lm, cap, request_id):
    ct = tokenize_chat(lm.tokenizer, [{"role": "user", "content": HARMFUL}])
    with cap.request(request_id, ct.spans), torch.no_grad():
        lm.model.generate(
            torch.tensor([ct.input_ids]), max_new_tokens=4, do_sample=False, pad_token_id=lm.tokenizer.pad_token_id
        )


def test_client_reconnects_after_the_sidecar_restarts(tmp_path, lm):
    port = free_port()
    cfg = make_config(tmp_path, listen=f"127.0.0.1:{port}")
    sc = SidecarThread(cfg)
    client = GrpcMonitorClient(f"127.0.0.1:{port}", lm.model_id, backoff_initial_s=0.05, backoff_max_s=0.2)
    cap = HFCapture(lm.model, ["model.layers.12"], client)
    try:
        assert client.wait_connected(10)
        _generate(lm, cap, "before")
        assert any(v.flagged for v in client.wait_final("before", 30))
        sc.stop()
        wait_for(lambda: not client.connected, 10, "the client to notice the sidecar is gone")
        _generate(lm, cap, "while-down")  # generation goes on; nothing to wait for
        sc = SidecarThread(cfg)
        assert client.wait_connected(30)
        # what was buffered while the sidecar was away (start, rows, end) is scored when it returns
        while_down = client.wait_final("while-down", 30)
        assert while_down is not None and any(v.flagged for v in while_down)
        _generate(lm, cap, "after")
        final = client.wait_final("after", 30)
        assert final is not None and any(v.flagged for v in final)
    finally:
        cap.remove()
        client.close(flush_timeout=0.5)
        sc.stop()
    assert not client.errors and client.dropped == 0 and client.interrupted == 0
    assert client.reconnects == 1


class _AtStep(StoppingCriteria):
    """Never stops generation; runs ``action`` after decoding step ``step`` and notes when each step ended."""

    def __init__(self, step: int, action):
        self.step, self.action, self.times = step, action, []

    def __call__(self, input_ids, scores, **kwargs):
        self.times.append(time.perf_counter())
        if len(self.times) == self.step:
            self.action()
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def _sidecar_process(port: int, tmp_path) -> subprocess.Popen:
    env = {
        **os.environ,
        "LATENTWATCH_METRICS_PORT": "none",
        "LATENTWATCH_SQLITE_PATH": str(tmp_path / "alerts.sqlite"),
        "LATENTWATCH_DETECTORS": "harmful_request",
    }
    cmd = [sys.executable, "-m", "latentwatch.cli", "serve", "--listen", f"127.0.0.1:{port}"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_generation_is_unchanged_when_the_sidecar_is_killed_mid_generation(tmp_path, lm):
    """SIGKILL the sidecar process four tokens into a generation and start a new one: the
    generation runs to the end with the same tokens, the client reconnects, and what the kill
    cost is counted and exported (the interrupted request; its later chunks, dropped)."""
    ct = tokenize_chat(lm.tokenizer, [{"role": "user", "content": HARMFUL}])
    ids = torch.tensor([ct.input_ids])
    gen = dict(max_new_tokens=40, min_new_tokens=40, do_sample=False, pad_token_id=lm.tokenizer.pad_token_id)
    with torch.no_grad():
        reference = lm.model.generate(ids, **gen)
    port = free_port()
    procs = [_sidecar_process(port, tmp_path)]
    client = GrpcMonitorClient(f"127.0.0.1:{port}", lm.model_id, backoff_initial_s=0.05, backoff_max_s=0.5)
    registry = CollectorRegistry()
    registry.register(CaptureCollector(client))
    cap = HFCapture(lm.model, ["model.layers.12"], client)

    def kill_and_restart() -> None:
        procs[0].kill()
        procs.append(_sidecar_process(port, tmp_path))

    at_step = _AtStep(4, kill_and_restart)
    try:
        assert client.wait_connected(180)
        with cap.request("during", ct.spans), torch.no_grad():
            out = lm.model.generate(ids, stopping_criteria=StoppingCriteriaList([at_step]), **gen)
        assert torch.equal(out, reference)
        assert len(procs) == 2 and procs[0].wait(10) == -signal.SIGKILL
        wait_for(lambda: client.reconnects >= 1, 180, "the client to reconnect to the new sidecar")
        assert client.wait_final("during", 5) is None  # its stream broke: no verdicts will come
        _generate(lm, cap, "after")
        final = client.wait_final("after", 60)
        assert final is not None and any(v.flagged for v in final)
    finally:
        cap.remove()
        client.close(flush_timeout=0.5)
        for proc in procs:
            proc.kill()
            proc.wait(10)
    steps = torch.tensor(at_step.times).diff()  # decoding steps after the first (prefill excluded)
    print(f"\ndecode step times: median {steps.median() * 1e3:.1f} ms, max {steps.max() * 1e3:.1f} ms (kill at step 4)")
    assert client.interrupted == 1 and client.drops["stream_lost"] > 0 and client.drops["buffer_full"] == 0
    assert not client.errors  # nothing of the interrupted request went to the new sidecar to be refused
    exported = generate_latest(registry).decode()
    assert "latentwatch_capture_requests_interrupted_total 1.0" in exported
    lost = client.drops["stream_lost"]
    assert f'latentwatch_capture_chunks_dropped_total{{reason="stream_lost"}} {lost}.0' in exported
    assert "latentwatch_capture_reconnects_total 1.0" in exported
