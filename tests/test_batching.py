"""Dynamic batching in the sidecar: concurrent streams' chunks are scored together (one SAE
encode for chunks of several requests), and every request's verdicts are those it gets alone."""

from __future__ import annotations

import threading

import grpc
from latentwatch.sidecar.server import SidecarThread
from latentwatch.v1 import monitor_pb2_grpc as pb_grpc

from .conftest import BENIGN, HARMFUL, make_config, stream_messages, transcript

HOOKS = ["model.layers.12", "model.layers.20"]


def test_concurrent_streams_share_encodes_and_keep_their_own_verdicts(tmp_path, lm):
    sc = SidecarThread(make_config(tmp_path, batch_wait_ms=20.0))  # a generous wait, so batches form here
    engine = sc.sidecar.engine
    calls: list[set[str]] = []
    original = engine.add_chunks

    def tap(chunks):
        calls.append({c.request_id for c in chunks})
        return original(chunks)

    engine.add_chunks = tap
    prompts = {f"s{i}": HARMFUL if i % 2 else BENIGN for i in range(8)}
    rows = {p: transcript(lm, p, HOOKS) for p in (HARMFUL, BENIGN)}
    got: dict[str, dict[str, tuple[bool, float]]] = {}
    try:
        with grpc.insecure_channel(sc.address) as ch:
            stub = pb_grpc.MonitorStub(ch)
            barrier = threading.Barrier(len(prompts))

            def run(rid: str, prompt: str) -> None:
                spans, r = rows[prompt]
                msgs = list(stream_messages(rid, lm.model_id, spans, r, chunk=4))
                barrier.wait()
                final = [m.verdict for m in stub.Stream(iter(msgs), timeout=120) if m.WhichOneof("kind") == "verdict"]
                got[rid] = {v.detector: (v.flagged, v.score) for v in final if v.final}

            threads = [threading.Thread(target=run, args=item) for item in prompts.items()]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        # Each request alone, through the same engine: the reference.
        for rid, prompt in prompts.items():
            spans, r = rows[prompt]
            want = engine.score(f"ref-{rid}", lm.model_id, spans, [(h, 0, r[h]) for h in HOOKS]).verdicts
            assert {v.detector for v in want} == set(got[rid]), rid
            for v in want:
                flagged, score = got[rid][v.detector]
                assert flagged == v.flagged and abs(score - v.score) < 1e-4, (rid, v.detector)
        assert got["s1"]["harmful_request"][0] and not got["s0"]["harmful_request"][0]
        shared = [c for c in calls if len(c) > 1]
        assert shared, "no encode served chunks of more than one request"
        print(f"{len(calls)} engine passes, {len(shared)} of them for several requests (up to {max(map(len, calls))})")
    finally:
        sc.stop()
