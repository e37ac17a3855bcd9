"""The gRPC contract over a real socket: round trip, health, reflection,
malformed input, WatchAlerts."""

from __future__ import annotations

import threading

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from latentwatch.v1 import monitor_pb2 as pb
from latentwatch.v1 import monitor_pb2_grpc as pb_grpc
from latentwatch.wire.codec import to_wire

from .conftest import BENIGN, HARMFUL, stream_messages, transcript

HOOK = "model.layers.12"


@pytest.fixture
def stub(sidecar):
    with grpc.insecure_channel(sidecar.address) as ch:
        yield pb_grpc.MonitorStub(ch), ch


def _final(responses, request_id):
    return {
        r.verdict.detector: r.verdict
        for r in responses
        if r.WhichOneof("kind") == "verdict" and r.verdict.request_id == request_id and r.verdict.final
    }


def test_stream_round_trip_scores_harmful_above_benign(stub, lm):
    stub, _ = stub
    msgs = []
    for rid, prompt in (("r-harm", HARMFUL), ("r-benign", BENIGN)):
        spans, rows = transcript(lm, prompt, [HOOK])
        msgs += list(stream_messages(rid, lm.model_id, spans, rows, chunk=7))
    responses = list(stub.Stream(iter(msgs), timeout=60))
    assert [r for r in responses if r.WhichOneof("kind") == "error"] == []
    done = [r.done.request_id for r in responses if r.WhichOneof("kind") == "done"]
    assert done == ["r-harm", "r-benign"]
    harm, benign = _final(responses, "r-harm")["harmful_request"], _final(responses, "r-benign")["harmful_request"]
    assert harm.flagged and not benign.flagged
    assert harm.score > harm.threshold > benign.score
    assert harm.evidence and all(e.contribution > 0 for e in harm.evidence)
    assert harm.token_end > harm.token_start > 0


def test_list_detectors_health_and_reflection(stub):
    stub, ch = stub
    dets = {d.name: d for d in stub.ListDetectors(pb.ListDetectorsRequest()).detectors}
    assert dets["harmful_request"].hook_names == [HOOK]
    assert 0 < dets["harmful_request"].threshold < 1
    status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service="latentwatch.v1.Monitor"))
    assert status.status == health_pb2.HealthCheckResponse.SERVING
    req = reflection_pb2.ServerReflectionRequest(list_services="")
    resp = next(reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(iter([req])))
    names = {s.name for s in resp.list_services_response.service}
    assert {"latentwatch.v1.Monitor", "grpc.health.v1.Health"} <= names


def _chunk(rid, hook=HOOK, tensor=None, start=1):
    import torch

    t = tensor if tensor is not None else to_wire(torch.randn(2, 576))
    return pb.ClientMessage(
        chunk=pb.ActivationChunk(request_id=rid, hook_name=hook, start_position=start, activations=t)
    )


def _malformed():
    import torch

    good = to_wire(torch.randn(2, 576))
    nan = torch.randn(2, 576)
    nan[1, 3] = float("nan")
    inf = torch.randn(2, 576)
    inf[0, 0] = float("inf")
    return {
        "wrong byte count": pb.Tensor(dtype=good.dtype, shape=[2, 576], data=good.data[:-4]),
        "unknown dtype": pb.Tensor(dtype=77, shape=[2, 576], data=good.data),
        "unspecified dtype": pb.Tensor(dtype=pb.DTYPE_UNSPECIFIED, shape=[2, 576], data=good.data),
        "wrong width": to_wire(torch.randn(2, 100)),
        "3-d shape": pb.Tensor(dtype=good.dtype, shape=[1, 2, 576], data=good.data),
        "NaN": to_wire(nan),
        "Inf": to_wire(inf),
    }


def test_malformed_chunks_get_invalid_argument_and_stream_keeps_serving(stub, lm):
    stub, _ = stub
    start = pb.ClientMessage(
        start=pb.RequestStart(
            request_id="m1", model_id="smollm2-135m-instruct", spans=[pb.Span(role=pb.SPAN_ROLE_USER, start=1, end=5)]
        )
    )
    bad = _malformed()
    msgs = [start] + [_chunk("m1", tensor=t) for t in bad.values()] + [_chunk("m1", hook="model.layers.99")]
    spans, rows = transcript(lm, HARMFUL, [HOOK])
    msgs += list(stream_messages("after", lm.model_id, spans, rows))  # a good request on the same stream
    responses = list(stub.Stream(iter(msgs), timeout=60))
    errors = [r.error for r in responses if r.WhichOneof("kind") == "error"]
    assert len(errors) == len(bad) + 1
    assert all(e.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and e.request_id == "m1" for e in errors)
    text = " | ".join(e.message for e in errors)
    for needle in ("bytes", "dtype", "width", "shape", "NaN", "unknown layer"):
        assert needle in text
    assert _final(responses, "after")["harmful_request"].flagged


def test_unknown_request_is_failed_precondition(stub):
    stub, _ = stub
    responses = list(stub.Stream(iter([_chunk("never-started")]), timeout=30))
    assert responses[0].error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert "RequestStart" in responses[0].error.message


def test_score_rpc_and_its_invalid_argument(stub, lm):
    stub, _ = stub
    spans, rows = transcript(lm, HARMFUL, [HOOK])
    msgs = list(stream_messages("s1", lm.model_id, spans, rows))
    req = pb.ScoreRequest(start=msgs[0].start, chunks=[m.chunk for m in msgs[1:-1]])
    verdicts = {v.detector: v for v in stub.Score(req, timeout=60).verdicts}
    assert verdicts["harmful_request"].flagged and verdicts["harmful_request"].final
    req.chunks[0].activations.data = req.chunks[0].activations.data[:-1]
    with pytest.raises(grpc.RpcError) as err:
        stub.Score(req, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "bytes" in err.value.details()
    # the server still serves
    assert stub.ListDetectors(pb.ListDetectorsRequest(), timeout=10).detectors


def test_watch_alerts_streams_the_alert(stub, lm):
    stub, _ = stub
    got: list[pb.Alert] = []
    call = stub.WatchAlerts(pb.WatchAlertsRequest(detectors=["harmful_request"]), timeout=60)
    ready = threading.Event()

    def consume():
        ready.set()
        for a in call:
            got.append(a)
            break

    t = threading.Thread(target=consume)
    t.start()
    ready.wait()
    import time

    time.sleep(0.5)  # let the subscription register before the alert is raised
    spans, rows = transcript(lm, HARMFUL, [HOOK])
    list(stub.Stream(stream_messages("w1", lm.model_id, spans, rows), timeout=60))
    t.join(30)
    call.cancel()
    assert got and got[0].request_id == "w1" and got[0].detector == "harmful_request"
    assert got[0].evidence and got[0].score >= got[0].threshold


def test_watch_alerts_rejects_unknown_detector(stub):
    stub, _ = stub
    with pytest.raises(grpc.RpcError) as err:
        next(stub.WatchAlerts(pb.WatchAlertsRequest(detectors=["nope"]), timeout=10))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
