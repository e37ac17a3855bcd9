"""Serving on a unix socket, and a capture client that outlives its sidecar."""

from __future__ import annotations

import grpc
import torch
from latentwatch.capture import GrpcMonitorClient, HFCapture
from latentwatch.chat import tokenize_chat
from latentwatch.server import SidecarThread
from latentwatch.v1 import monitor_pb2_grpc as pb_grpc

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
        lm.model.generate(torch.tensor([ct.input_ids]), max_new_tokens=4, do_sample=False,
                          pad_token_id=lm.tokenizer.pad_token_id)


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
        _generate(lm, cap, "after")
        final = client.wait_final("after", 30)
        assert final is not None and any(v.flagged for v in final)
    finally:
        cap.remove()
        client.close(flush_timeout=0.5)
        sc.stop()
    # a request whose start was lost with the old stream is refused, never mis-scored
    assert all(e.code == grpc.StatusCode.FAILED_PRECONDITION.value[0] for e in client.errors)
