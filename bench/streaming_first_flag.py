"""How early a live sidecar flags a refusal: median response-token index of the first flag.

A real sidecar on loopback, the bundled model with capture hooks, and a
token-by-token decode loop (KV cache, one forward per token, as ``generate``
runs) that is teacher-forced to produce held-out refusals, since the bundled
model almost never refuses on its own. For each response it records the
response token at which the streamed ``refusal`` verdict says it fired, and
how many tokens the decoder had produced when that verdict reached the client.

Run: python bench/streaming_first_flag.py [--data EVAL_DIR/refusal_test.jsonl] [--limit 40]
(without --data: the authored held-out refusals in detectors/data/responses.jsonl).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import uuid
from pathlib import Path

import torch
from latentwatch.capture import GrpcMonitorClient, HFCapture
from latentwatch.capture.chat import tokenize_chat
from latentwatch.detectors.base import Span
from latentwatch.models import load_model
from latentwatch.sidecar.config import Config
from latentwatch.sidecar.server import SidecarThread
from latentwatch.training.probes import authored_responses, refusal_template_split
from latentwatch.v1 import monitor_pb2 as pb


def refusals(data: str | None, limit: int) -> list[dict]:
    if data:
        rows = [json.loads(x) for x in Path(data).read_text().splitlines() if x.strip()]
        rows = [r for r in rows if r.get("label") == 1]
    else:
        rows = [
            {"messages": [{"role": "user", "content": r["prompt"]}], "response": r["response"]}
            for r in authored_responses()
            if r["label"] == 1 and refusal_template_split(r) == "test"
        ]
    return rows[:limit]


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data")
    ap.add_argument("--limit", type=int, default=40)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp()
    sidecar = SidecarThread(Config(listen="127.0.0.1:0", metrics_port=None, sqlite_path=f"{tmp}/alerts.sqlite"))
    lm = load_model()
    first: dict[str, tuple[int, int]] = {}
    produced: dict[str, int] = {}
    lock = threading.Lock()

    def on_verdict(v) -> None:
        if v.detector == "refusal" and v.flagged and not v.final:
            with lock:
                first.setdefault(v.request_id, (v.token_end, produced.get(v.request_id, 0)))

    client = GrpcMonitorClient(sidecar.address, lm.model_id, on_verdict=on_verdict)
    client.wait_connected(10)
    capture = HFCapture(lm.model, sidecar.sidecar.engine.hook_names, client)
    flag_at, seen_at, lengths, early = [], [], [], 0
    try:
        for rec in refusals(args.data, args.limit):
            rid = f"stream-{uuid.uuid4().hex[:8]}"
            ct = tokenize_chat(lm.tokenizer, rec["messages"], response=rec["response"])
            prompt, response = ct.input_ids[: ct.prompt_length], ct.input_ids[ct.prompt_length :]
            spans = [s for s in ct.spans if s.role != pb.SPAN_ROLE_RESPONSE]
            spans.append(Span(pb.SPAN_ROLE_RESPONSE, ct.prompt_length, 0))  # open-ended, as while generating
            with capture.request(rid, spans):
                out = lm.model(torch.tensor([prompt]), use_cache=True)
                for i, token in enumerate(response):
                    out = lm.model(torch.tensor([[token]]), past_key_values=out.past_key_values, use_cache=True)
                    with lock:
                        produced[rid] = i + 1  # response tokens decoded so far
            client.wait_final(rid, timeout=30)
            lengths.append(len(response))
            if rid in first:
                end, seen = first[rid]
                flag_at.append(end - ct.prompt_length)
                seen_at.append(seen)
                early += seen < len(response)  # the flag reached the client before the last token was decoded
    finally:
        capture.remove()
        client.close()
        sidecar.stop()
    n = len(lengths)
    print(
        json.dumps(
            {
                "refusals": n,
                "flagged_while_streaming": len(flag_at),
                "median_response_tokens": statistics.median(lengths) if lengths else None,
                "median_first_flag_token": statistics.median(flag_at) if flag_at else None,
                "median_tokens_decoded_when_verdict_arrived": statistics.median(seen_at) if seen_at else None,
                "flag_received_before_response_end": early,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
