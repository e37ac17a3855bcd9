"""One sidecar monitoring two models over a real socket: a request's model_id
picks its detector pack, ListDetectors answers per model, and an unknown model
gets a clear NOT_FOUND."""

from __future__ import annotations

import grpc
import pytest
import torch
from latentwatch.sidecar.server import SidecarThread
from latentwatch.v1 import monitor_pb2 as pb
from latentwatch.v1 import monitor_pb2_grpc as pb_grpc
from latentwatch.wire.codec import to_wire

from .conftest import HARMFUL, make_config, stream_messages, transcript

SMOL, QWEN = "smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    sc = SidecarThread(make_config(tmp_path_factory.mktemp("multi"), models=[SMOL, QWEN]))
    with grpc.insecure_channel(sc.address) as ch:
        yield pb_grpc.MonitorStub(ch)
    sc.stop()


def test_list_detectors_answers_per_model(two_models):
    every = two_models.ListDetectors(pb.ListDetectorsRequest(), timeout=10).detectors
    assert {d.model_id for d in every} == {SMOL, QWEN}
    qwen = two_models.ListDetectors(pb.ListDetectorsRequest(model_id=QWEN), timeout=10).detectors
    assert {d.model_id for d in qwen} == {QWEN} and {"harmful_request", "refusal", "harmful_compliance"} <= {
        d.name for d in qwen}  # fmt: skip
    assert {h for d in qwen for h in d.hook_names} == {"model.layers.12"}
    with pytest.raises(grpc.RpcError) as err:
        two_models.ListDetectors(pb.ListDetectorsRequest(model_id="no-such-model"), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND and SMOL in err.value.details()


def test_each_request_goes_to_its_models_pack(two_models, lm):
    spans, rows = transcript(lm, HARMFUL, ["model.layers.12"])
    smol = list(stream_messages("smol-1", SMOL, spans, rows))
    # A Qwen-width request named by its hub id: it must reach the Qwen pack (896-wide rows).
    qwen = list(stream_messages("qwen-1", "Qwen/Qwen2.5-Coder-0.5B-Instruct", spans,
                                {"model.layers.12": torch.randn(rows["model.layers.12"].shape[0], 896)}))  # fmt: skip
    user = [pb.Span(role=pb.SPAN_ROLE_USER, start=1, end=3)]
    unknown = pb.ClientMessage(start=pb.RequestStart(request_id="u-1", model_id="llama-9000", spans=user))
    chunk = pb.ActivationChunk(request_id="smol-2", hook_name="model.layers.12", start_position=1,
                               activations=to_wire(torch.randn(2, 896)))  # fmt: skip
    wrong_width = pb.ClientMessage(chunk=chunk)
    start2 = pb.ClientMessage(start=pb.RequestStart(request_id="smol-2", model_id=SMOL, spans=[]))
    responses = list(two_models.Stream(iter(smol + qwen + [unknown, start2, wrong_width]), timeout=120))
    errors = {r.error.request_id: r.error for r in responses if r.WhichOneof("kind") == "error"}
    assert errors["u-1"].code == grpc.StatusCode.NOT_FOUND.value[0] and QWEN in errors["u-1"].message
    assert errors["smol-2"].code == grpc.StatusCode.INVALID_ARGUMENT.value[0]  # 896 wide for a 576-wide model
    assert "qwen-1" not in errors and "smol-1" not in errors
    finals = {(r.verdict.request_id, r.verdict.detector): r.verdict for r in responses
              if r.WhichOneof("kind") == "verdict" and r.verdict.final}  # fmt: skip
    assert finals[("smol-1", "harmful_request")].flagged
    qwen_evidence = {e.sae_id for (rid, _), v in finals.items() if rid == "qwen-1" for e in v.evidence}
    smol_evidence = {e.sae_id for (rid, _), v in finals.items() if rid == "smol-1" for e in v.evidence}
    assert all(s.startswith(QWEN) for s in qwen_evidence) and all(s.startswith(SMOL) for s in smol_evidence)
    assert ("qwen-1", "harmful_request") in finals
