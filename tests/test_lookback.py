"""Lookback ratios: the tracker's per-head computation equals the model's own
eager attention weights, whether the request runs as one forward or decodes
token by token against the KV cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from latentwatch.capture.chat import tokenize_chat
from latentwatch.capture.lookback import Head, LookbackTracker, parse_heads
from latentwatch.v1 import monitor_pb2 as pb

HEADS = [Head(3, 0), Head(14, 5), Head(14, 7), Head(27, 8)]
CONTEXT = "The Varnholt Bridge, finished in 1931, was designed by the engineer Ilse Marquardt."
QUESTION = "Who designed the Varnholt Bridge?"
ANSWER = "The Varnholt Bridge was designed by Ilse Marquardt in 1931."


def _transcript(lm):
    ct = tokenize_chat(lm.tokenizer, [{"role": "user", "content": QUESTION}], context=CONTEXT, response=ANSWER)
    ctx = next(s for s in ct.spans if s.role == pb.SPAN_ROLE_CONTEXT)
    resp = next(s for s in ct.spans if s.role == pb.SPAN_ROLE_RESPONSE)
    return ct, (ctx.start, ctx.end), resp.start


@torch.no_grad()
def _reference(lm, ids, context, response_start) -> torch.Tensor:
    """Lookback ratios from the full eager attention matrices."""
    previous = lm.model.config._attn_implementation
    lm.model.set_attn_implementation("eager")
    try:
        att = lm.model(torch.tensor([ids]), output_attentions=True).attentions
    finally:
        lm.model.set_attn_implementation(previous)
    n = len(ids)
    out = torch.zeros(n, len(HEADS))
    for j, h in enumerate(HEADS):
        w = att[h.layer][0, h.head].float()  # [n, n]
        ctx = w[:, context[0] : context[1]].sum(-1)
        gen = torch.stack([w[t, response_start:t].sum() for t in range(n)])
        out[:, j] = ctx / (ctx + gen).clamp_min(1e-9)
    return out


def _tracked(lm, context, response_start, run) -> list[tuple[int, torch.Tensor]]:
    """The tracker's (start, ratios) rows while ``run()`` drives the model."""
    rows = []
    tracker = LookbackTracker(lm.model, HEADS, emit=lambda start, r: rows.append((start, r)))
    try:
        tracker.begin(context, response_start)
        with torch.no_grad():
            run()
    finally:
        tracker.remove()
    return rows


def test_one_forward_matches_eager_attention(lm):
    ct, context, response_start = _transcript(lm)
    ((start, got),) = _tracked(lm, context, response_start, lambda: lm.model(torch.tensor([ct.input_ids])))
    assert start == 0 and got.shape == (len(ct.input_ids), len(HEADS))
    want = _reference(lm, ct.input_ids, context, response_start)
    torch.testing.assert_close(got[response_start:], want[response_start:], atol=1e-4, rtol=1e-4)
    assert ((got >= 0) & (got <= 1)).all()


def test_token_by_token_decode_matches_one_forward(lm):
    """The decode path scores each new query against the kept keys only (linear per token)."""
    ct, context, response_start = _transcript(lm)

    def decode():
        out = lm.model(torch.tensor([ct.input_ids[:response_start]]), use_cache=True)
        for tok in ct.input_ids[response_start:]:
            out = lm.model(torch.tensor([[tok]]), past_key_values=out.past_key_values, use_cache=True)

    rows = _tracked(lm, context, response_start, decode)
    assert [s for s, _ in rows] == [0] + list(range(response_start, len(ct.input_ids)))
    got = torch.cat([r for _, r in rows])
    want = _reference(lm, ct.input_ids, context, response_start)
    torch.testing.assert_close(got[response_start:], want[response_start:], atol=1e-4, rtol=1e-4)


def test_head_names_parse_and_bad_ones_are_refused(lm):
    assert parse_heads(["L14H3", "l2h0"]) == [Head(14, 3), Head(2, 0)]
    with pytest.raises(ValueError, match="L<layer>H<head>"):
        parse_heads(["14:3"])
    with pytest.raises(ValueError, match="outside this model"):
        LookbackTracker(lm.model, [Head(99, 0)])


def _rag_rule(tmp_path) -> Path:
    """rag_ignored: context supplied, context_attending expected within 4 answer tokens."""
    rule = tmp_path / "rag_ignored.yaml"
    rule.write_text(yaml.safe_dump({
        "name": "rag_ignored", "kind": "absence", "sae": None, "threshold": 0.5,
        "params": {"trigger": "span:context", "expected": "context_attending", "within_tokens": 4},
    }))  # fmt: skip
    return rule


def _lookback_spec(tmp_path) -> Path:
    """A lookback_probe detector over two heads (no latents): enough to carry
    attention statistics end to end. Its weights are set here, not trained."""
    from safetensors.torch import save_file

    save_file({"indices": torch.zeros(0, dtype=torch.int32), "weights": torch.tensor([2.0, 1.0]),
               "bias": torch.tensor(-1.0), "mean": torch.zeros(2), "scale": torch.ones(2)},
              str(tmp_path / "attending.safetensors"))  # fmt: skip
    spec = tmp_path / "context_attending.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "context_attending", "kind": "lookback_probe", "sae": None, "threshold": 0.5, "alert": False,
        "params": {"heads": ["L14H5", "L27H8"], "probe": str(tmp_path / "attending.safetensors"), "min_tokens": 2},
    }))  # fmt: skip
    return [spec, _rag_rule(tmp_path)]


def test_attention_chunks_over_grpc_reach_a_lookback_detector(tmp_path, lm):
    """Lookback ratios travel as their own message and reach a detector that
    reads them; an absence rule keyed on the context span judges the request;
    malformed ratios get INVALID_ARGUMENT and the stream goes on."""
    import grpc
    from latentwatch.capture.teacher_forced import monitored_rows
    from latentwatch.sidecar.server import SidecarThread
    from latentwatch.v1 import monitor_pb2_grpc as pb_grpc
    from latentwatch.wire.codec import to_wire

    from .conftest import make_config, stream_messages

    specs = _lookback_spec(tmp_path)
    sidecar = SidecarThread(make_config(tmp_path, detector_specs=[str(p) for p in specs]))
    try:
        engine = sidecar.sidecar.engine
        assert engine.heads == ["L14H5", "L27H8"] and engine.hook_names == []
        ct, _, _ = _transcript(lm)
        rows, lookback = monitored_rows(lm, ct.input_ids, ct.spans, engine.hook_names, engine.heads)
        att = pb.AttentionChunk(request_id="rag-1", start_position=0, heads=engine.heads, lookback=to_wire(lookback))
        bad = [
            pb.AttentionChunk(request_id="rag-1", heads=engine.heads, lookback=to_wire(lookback * 3)),
            pb.AttentionChunk(request_id="rag-1", heads=engine.heads[:1], lookback=to_wire(lookback)),
            pb.AttentionChunk(request_id="rag-1", heads=["L0H0"], lookback=to_wire(lookback[:, :1])),
        ]
        msgs = list(stream_messages("rag-1", lm.model_id, ct.spans, rows))
        msgs = msgs[:1] + [pb.ClientMessage(attention=a) for a in [*bad, att]] + msgs[1:]
        with grpc.insecure_channel(sidecar.address) as ch:
            responses = list(pb_grpc.MonitorStub(ch).Stream(iter(msgs), timeout=60))
            listed = {d.name: d for d in pb_grpc.MonitorStub(ch).ListDetectors(pb.ListDetectorsRequest()).detectors}
    finally:
        sidecar.stop()
    errors = [r.error for r in responses if r.WhichOneof("kind") == "error"]
    assert len(errors) == 3 and all(e.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] for e in errors)
    final = {r.verdict.detector: r.verdict for r in responses if r.WhichOneof("kind") == "verdict" and r.verdict.final}
    resp = next(s for s in ct.spans if s.role == pb.SPAN_ROLE_RESPONSE)
    mean = lookback[resp.start : resp.end].mean(0)
    want = float(torch.sigmoid(2.0 * mean[0] + mean[1] - 1.0))
    attending = final["context_attending"]
    assert abs(attending.score - want) < 1e-4  # the ratios arrived intact
    rule = final["rag_ignored"]
    assert rule.flagged == (attending.score < 0.5) and "context" in rule.explanation
    assert list(listed["context_attending"].heads) == ["L14H5", "L27H8"]
    assert list(listed["rag_ignored"].requires) == ["context_attending"]


def _overlap_specs(tmp_path) -> list[Path]:
    """A lookback_probe reading one head and the answer-context token overlap (weights set
    here, not trained), on the bundled SAE's layer so activation chunks (with ids) reach it."""
    from safetensors.torch import save_file

    save_file({"indices": torch.zeros(0, dtype=torch.int32), "weights": torch.tensor([0.0, 4.0]),
               "bias": torch.tensor(0.0), "mean": torch.tensor([0.5, 0.5]), "scale": torch.tensor([1.0, 0.25])},
              str(tmp_path / "attending.safetensors"))  # fmt: skip
    spec = tmp_path / "context_attending.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "context_attending", "kind": "lookback_probe", "sae": "smollm2-135m-instruct-l12",
        "threshold": 0.5, "alert": False,
        "params": {"heads": ["L14H5"], "probe": str(tmp_path / "attending.safetensors"), "min_tokens": 2,
                   "overlap": True},
    }))  # fmt: skip
    return [spec, _rag_rule(tmp_path)]


def test_overlap_counts_answer_tokens_found_in_the_context(tmp_path):
    """The sidecar counts, from the ids that come with the rows, how many answer tokens the
    context holds: an answer made of context tokens reads as attending, one of new tokens
    flags rag_ignored naming the overlap as missing, and rows without ids leave the feature
    at its training mean (score exactly sigmoid(bias))."""
    from latentwatch.detectors.base import Span
    from latentwatch.sidecar.engine import Engine

    engine = Engine.from_specs(_overlap_specs(tmp_path))
    (hook,) = engine.hook_names
    spans = [Span(pb.SPAN_ROLE_CONTEXT, 1, 6), Span(pb.SPAN_ROLE_USER, 6, 8), Span(pb.SPAN_ROLE_RESPONSE, 8, 12)]
    context_ids = [11, 12, 13, 14, 15]
    rows = torch.randn(12, 576)
    ratios = torch.full((12, 1), 0.5)

    def run(rid: str, answer_ids: list[int] | None) -> dict:
        engine.start(rid, "m", spans)
        engine.add_attention(rid, 0, ["L14H5"], ratios)
        ids = None if answer_ids is None else torch.tensor([1, *context_ids, 21, 22, *answer_ids])
        engine.add_chunk(rid, hook, 0, rows, ids)
        return {v.detector: v for v in engine.end(rid).verdicts}

    copied = run("copied", [12, 14, 15, 11])
    assert copied["context_attending"].score == pytest.approx(float(torch.sigmoid(torch.tensor(8.0))), abs=1e-5)
    assert not copied["rag_ignored"].flagged
    new = run("new", [31, 32, 33, 12])  # a quarter of the answer is in the context
    assert new["context_attending"].score == pytest.approx(float(torch.sigmoid(torch.tensor(-4.0))), abs=1e-5)
    assert new["rag_ignored"].flagged
    assert any(e.label == "answer tokens found in the context" and e.missing for e in new["rag_ignored"].evidence)
    bare = run("no-ids", None)
    assert bare["context_attending"].score == pytest.approx(0.5, abs=1e-6)
