"""Per-request state is bounded: TTL expiry, a session cap, client drops counted."""

from __future__ import annotations

import time
import urllib.request

import grpc
import pytest
import torch
from latentwatch.detectors.base import Span
from latentwatch.sidecar.engine import Engine, Limits
from latentwatch.v1 import monitor_pb2 as pb
from latentwatch.v1 import monitor_pb2_grpc as pb_grpc
from latentwatch.wire.codec import to_wire
from latentwatch.wire.errors import MonitorError

USER = [Span(pb.SPAN_ROLE_USER, 1, 10)]


def test_idle_requests_expire_after_the_ttl():
    engine = Engine.from_specs(limits=Limits(session_ttl_s=0.2))
    engine.start("r", "m", USER)
    time.sleep(0.3)
    assert engine.expire() == 1
    with pytest.raises(MonitorError) as err:
        engine.add_chunk("r", "model.layers.12", 1, torch.zeros(2, 576))
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION


def test_session_cap_is_resource_exhausted():
    engine = Engine.from_specs(limits=Limits(max_sessions=2))
    engine.start("a", "m", USER)
    engine.start("b", "m", USER)
    with pytest.raises(MonitorError) as err:
        engine.start("c", "m", USER)
    assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    engine.end("a")
    engine.start("c", "m", USER)  # room again once a request ends


def test_token_cap_is_resource_exhausted():
    engine = Engine.from_specs(limits=Limits(max_tokens_per_request=8))
    engine.start("a", "m", USER)
    with pytest.raises(MonitorError) as err:
        engine.add_chunk("a", "model.layers.12", 4, torch.zeros(5, 576))
    assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_client_reported_drops_reach_the_metrics(sidecar):
    start = pb.RequestStart(
        request_id="d", model_id="smollm2-135m-instruct", spans=[pb.Span(role=pb.SPAN_ROLE_USER, start=1, end=3)]
    )
    chunk = pb.ActivationChunk(
        request_id="d",
        hook_name="model.layers.12",
        start_position=1,
        activations=to_wire(torch.randn(2, 576)),
        dropped_since_last=5,
    )
    with grpc.insecure_channel(sidecar.address) as ch:
        list(
            pb_grpc.MonitorStub(ch).Stream(
                iter(
                    [
                        pb.ClientMessage(start=start),
                        pb.ClientMessage(chunk=chunk),
                        pb.ClientMessage(end=pb.RequestEnd(request_id="d")),
                    ]
                ),
                timeout=30,
            )
        )
    body = urllib.request.urlopen(f"http://127.0.0.1:{sidecar.sidecar.metrics_port}/metrics").read().decode()
    assert 'latentwatch_chunks_dropped_total{reason="client_buffer_full"} 5.0' in body
    assert "latentwatch_active_requests 0.0" in body
