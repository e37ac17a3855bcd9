"""Batched offline scoring (``latentwatch score``): padded forwards that stop at the deepest
monitored layer, and one engine pass per batch, give what one record at a time gives."""

from __future__ import annotations

import pytest
import torch
from latentwatch.capture.chat import tokenize_chat
from latentwatch.capture.score import score_records
from latentwatch.capture.teacher_forced import batched_rows, residual_rows
from latentwatch.sidecar.engine import Engine

from .conftest import BENIGN, HARMFUL

RECORDS = [
    {"messages": [{"role": "user", "content": HARMFUL}]},
    {"messages": [{"role": "user", "content": BENIGN}], "response": "Mash bananas, mix with flour and bake."},
    {"messages": [{"role": "user", "content": HARMFUL}], "response": "I can't help with that. It is dangerous."},
    {"messages": [{"role": "user", "content": "Hi"}]},
    {"messages": [{"role": "user", "content": HARMFUL}], "response": "Sure. First, get a steel pipe and two end caps."},
    {"messages": [{"role": "user", "content": "Summarise the plot of Hamlet in four long sentences, please."}],
     "response": "Prince Hamlet learns from a ghost that his uncle murdered his father and married his mother."},
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}],
     "response": "4"},
]  # fmt: skip


@pytest.fixture(scope="module")
def engine():
    return Engine.from_specs()


def test_batched_scores_equal_one_record_at_a_time(engine, lm):
    records = [("same-id" if i < 2 else f"r{i}", rec) for i, rec in enumerate(RECORDS)]  # ids may repeat
    got = score_records(engine, lm, records, batch_size=3)
    assert [g["id"] for g in got] == [rid for rid, _ in records]  # input order kept
    flagged = 0
    for (_, rec), out in zip(records, got, strict=True):
        ct = tokenize_chat(lm.tokenizer, rec["messages"], response=rec.get("response"))
        rows = residual_rows(lm, ct.input_ids, engine.hook_names)
        want = engine.score("ref", lm.model_id, ct.spans, [(h, 0, rows[h]) for h in engine.hook_names]).verdicts
        assert set(out["scores"]) == {v.detector for v in want}
        for v in want:
            s = out["scores"][v.detector]
            assert s["score"] == pytest.approx(v.score, abs=1e-4), v.detector
            assert s["flagged"] == v.flagged and s["token_span"] == [v.token_start, v.token_end]
            flagged += v.flagged
    assert flagged  # the comparison covers flags, not only silence


def test_batched_forwards_stop_at_the_deepest_hook(lm):
    hooks = ["model.layers.3", "model.layers.12"]
    above = []
    handle = lm.model.get_submodule("model.layers.13").register_forward_hook(lambda *a: above.append(1))
    head = lm.model.lm_head.register_forward_hook(lambda *a: above.append(1))
    seqs = [tokenize_chat(lm.tokenizer, r["messages"], response=r.get("response")).input_ids for r in RECORDS]
    try:
        got = dict(batched_rows(lm, seqs, hooks, batch_size=4))
    finally:
        handle.remove()
        head.remove()
    assert not above  # layer 13 and the LM head never ran
    for i, seq in enumerate(seqs):
        want = residual_rows(lm, seq, hooks)
        for h in hooks:
            assert got[i][h].shape == want[h].shape
            assert torch.allclose(got[i][h], want[h], atol=1e-3, rtol=1e-4), (i, h)
