"""``latentwatch generate FILE.jsonl``: monitored batch generation.

Each record (the ``latentwatch score`` input format; a ``response`` is ignored)
is answered greedily by the model with the live monitor attached (the engine
in-process, HF capture hooks on), acting where the pack's specs say
``act: steer`` and ``--act steer`` allows it. One JSON line per record:
``{id, response, scores, actions}``. This is how steering is measured, and a
red-teaming loop: generate, then read which requests were flagged and steered.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tqdm import tqdm

from latentwatch.capture.chat import tokenize_chat
from latentwatch.capture.hf import HFCapture
from latentwatch.capture.local import LocalMonitor
from latentwatch.capture.score import read_records
from latentwatch.detectors.base import Span
from latentwatch.models import LoadedModel
from latentwatch.sidecar.engine import Engine
from latentwatch.v1 import monitor_pb2 as pb


@torch.no_grad()
def generate_file(engine: Engine, lm: LoadedModel, path: Path, out, max_new_tokens: int = 64, act: bool = False) -> int:
    """Answer every record of ``path`` under the monitor; write JSON lines to ``out``; return the count."""
    records = [(str(rec.get("id", lineno)), rec) for lineno, rec in read_records(path)]
    monitor = LocalMonitor(engine, lm.model_id)
    capture = HFCapture(lm.model, engine.hook_names, monitor, act=act)
    pad = lm.tokenizer.pad_token_id or lm.tokenizer.eos_token_id
    try:
        for n, (rid, rec) in enumerate(tqdm(records, desc="generating", unit="record")):
            request_id = f"generate-{n}"  # record ids may repeat
            ct = tokenize_chat(lm.tokenizer, rec["messages"], context=rec.get("context"))
            spans = [*ct.spans, Span(pb.SPAN_ROLE_RESPONSE, ct.prompt_length, 0)]
            with capture.request(request_id, spans):
                ids = lm.model.generate(
                    torch.tensor([ct.input_ids]), max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad
                )
            verdicts = monitor.wait_final(request_id, timeout=0) or []
            response = lm.tokenizer.decode(ids[0, ct.prompt_length :], skip_special_tokens=True)
            line = {
                "id": rid,
                "response": response,
                "scores": {v.detector: {"score": round(v.score, 6), "flagged": v.flagged} for v in verdicts},
                "actions": capture.actions.pop(request_id, []),
            }
            out.write(json.dumps(line) + "\n")
    finally:
        capture.remove()
    return len(records)
