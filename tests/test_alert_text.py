"""What alerts carry of the monitored text (alert_text: none, hashed, full), checked where alerts
land: a real Redis stream, WatchAlerts subscribers and the SQLite file."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading

import grpc
import pytest
import redis
import torch
from latentwatch.capture import GrpcMonitorClient, HFCapture
from latentwatch.capture.chat import tokenize_chat
from latentwatch.capture.teacher_forced import residual_rows
from latentwatch.detectors.base import Span
from latentwatch.detectors.records import AlertRecord
from latentwatch.export.redaction import EXCERPT_MAX_CHARS, redact
from latentwatch.export.sinks import SQLiteSink
from latentwatch.sidecar.config import Config
from latentwatch.sidecar.server import SidecarThread
from latentwatch.v1 import monitor_pb2 as pb
from latentwatch.v1 import monitor_pb2_grpc as pb_grpc
from latentwatch.wire.codec import to_wire

from .conftest import HARMFUL, make_config, stream_messages, wait_for

HOOK = "model.layers.12"
SECRET_WORDS = "pipe bomb"  # in HARMFUL's user turn, which harmful_request's alert covers


def _messages_with_text(lm, request_id: str) -> tuple[list[pb.ClientMessage], list[str]]:
    """A harmful request's stream, each chunk carrying its tokens' text; and all the pieces."""
    ct = tokenize_chat(lm.tokenizer, [{"role": "user", "content": HARMFUL}])
    pieces = lm.tokenizer.batch_decode([[i] for i in ct.input_ids], clean_up_tokenization_spaces=False)
    msgs = list(stream_messages(request_id, lm.model_id, ct.spans, residual_rows(lm, ct.input_ids, [HOOK])))
    for m in msgs:
        if m.WhichOneof("kind") == "chunk":
            start = m.chunk.start_position
            m.chunk.token_text.extend(pieces[start : start + m.chunk.activations.shape[0]])
    return msgs, pieces


def _stream_and_watch(sc: SidecarThread, msgs: list[pb.ClientMessage]) -> pb.Alert:
    """Send the messages while a WatchAlerts subscriber listens; return the alert it got."""
    got: list[pb.Alert] = []
    with grpc.insecure_channel(sc.address) as ch:
        stub = pb_grpc.MonitorStub(ch)
        call = stub.WatchAlerts(pb.WatchAlertsRequest(detectors=["harmful_request"]), timeout=60)

        def first_alert() -> None:
            for alert in call:
                got.append(alert)
                break

        watcher = threading.Thread(target=first_alert)
        watcher.start()
        broadcaster = sc.sidecar.servicer.broadcaster
        wait_for(lambda: broadcaster._subs, 10, "the WatchAlerts subscription")
        list(stub.Stream(iter(msgs), timeout=60))
        watcher.join(30)
        call.cancel()
    assert got, "no alert reached the WatchAlerts subscriber"
    return got[0]


@pytest.mark.parametrize("mode", ["none", "hashed", "full"])
def test_alert_text_modes_in_redis_and_watchers(tmp_path, lm, redis_url, mode):
    stream = f"lw:text:{mode}"
    sc = SidecarThread(make_config(tmp_path, redis_url=redis_url, redis_stream=stream, alert_text=mode))
    try:
        msgs, pieces = _messages_with_text(lm, f"t-{mode}")
        watched = _stream_and_watch(sc, msgs)
    finally:
        sc.stop()
    (entry,) = redis.Redis.from_url(redis_url, decode_responses=True).xrange(stream)
    fields = entry[1]
    flagged = "".join(pieces[int(fields["token_start"]) : int(fields["token_end"])])
    assert SECRET_WORDS in flagged  # the alert's span covers the words, so what follows is a real test
    want = {"none": "", "hashed": "sha256:" + hashlib.sha256(flagged.encode()).hexdigest(), "full": flagged}[mode]
    assert fields["text"] == want and watched.text == want
    # Attribution: positions always; each token's own text only under full.
    attribution = json.loads(fields["attribution"])
    assert attribution and [(a.position, a.text) for a in watched.attribution] == [
        (a["position"], a["text"]) for a in attribution
    ]
    assert [a["text"] for a in attribution] == [pieces[a["position"]] if mode == "full" else "" for a in attribution]
    if mode != "full":
        assert not any(SECRET_WORDS in v for v in fields.values())
        assert SECRET_WORDS not in str(watched)


def test_no_text_is_kept_unless_alerts_may_carry_it(tmp_path, lm):
    for mode, kept in (("none", False), ("hashed", True)):
        sc = SidecarThread(make_config(tmp_path, alert_text=mode))
        try:
            router = sc.sidecar.engine
            router.start("r", lm.model_id, [Span(pb.SPAN_ROLE_USER, 1, 3)])
            router.add_text("r", 0, ["a", "b", "c"])
            assert bool(router.engine_of("r")._sessions["r"].text) is kept
        finally:
            sc.stop()


def test_full_text_lands_in_sqlite_from_a_capturing_client(tmp_path, lm):
    """HFCapture with a tokenizer sends each forward's token text (prompt and generated tokens)
    through GrpcMonitorClient; the SQLite alert quotes the flagged words."""
    sc = SidecarThread(make_config(tmp_path, alert_text="full"))
    client = GrpcMonitorClient(sc.address, lm.model_id)
    cap = HFCapture(lm.model, [HOOK], client, tokenizer=lm.tokenizer)
    try:
        ct = tokenize_chat(lm.tokenizer, [{"role": "user", "content": HARMFUL}])
        with cap.request("cap-1", ct.spans + [Span(pb.SPAN_ROLE_RESPONSE, ct.prompt_length, 0)]), torch.no_grad():
            lm.model.generate(
                torch.tensor([ct.input_ids]), max_new_tokens=3, do_sample=False, pad_token_id=lm.tokenizer.pad_token_id
            )
        assert client.wait_final("cap-1", 30) is not None
    finally:
        cap.remove()
        client.close(flush_timeout=0.5)
        sc.stop()
    alerts = {a.detector: a for a in SQLiteSink(tmp_path / "alerts.sqlite").read_all()}
    assert SECRET_WORDS in alerts["harmful_request"].text


def test_sqlite_files_from_before_the_text_column_gain_it(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE alerts (alert_id TEXT PRIMARY KEY, request_id TEXT, model_id TEXT, detector TEXT,"
        " score REAL, threshold REAL, token_start INTEGER, token_end INTEGER,"
        " timestamp REAL, low_confidence INTEGER, evidence TEXT)"
    )
    db.execute("INSERT INTO alerts VALUES ('a1', 'old', 'm', 'd', 0.9, 0.5, 1, 4, 1.0, 0, '[]')")
    db.commit()
    db.close()
    sink = SQLiteSink(path)
    sink.emit(AlertRecord("new", "m", "d", 0.9, 0.5, 1, 4, 2.0, explanation="why", text="quoted"))
    old, new = sink.read_all()
    sink.close()
    assert (old.request_id, old.text, old.explanation) == ("old", "", "")
    assert (new.request_id, new.text, new.explanation) == ("new", "quoted", "why")


def test_redaction_rules():
    assert redact(["a", "b"], "none") == "" and redact([], "full") == "" and redact(["", ""], "hashed") == ""
    assert redact(["x" * EXCERPT_MAX_CHARS], "full") == "x" * EXCERPT_MAX_CHARS
    long = redact(["y" * (EXCERPT_MAX_CHARS + 1)], "full")
    assert len(long) == EXCERPT_MAX_CHARS and long.endswith("…")
    # the hash covers the whole text, not the cut excerpt
    assert redact(["y" * (EXCERPT_MAX_CHARS + 1)], "hashed") != redact(["y" * (EXCERPT_MAX_CHARS + 2)], "hashed")
    with pytest.raises(ValueError, match="alert_text must be one of none, hashed, full"):
        Config(alert_text="partial")


def test_token_text_must_match_the_rows(sidecar):
    start = pb.RequestStart(
        request_id="m", model_id="smollm2-135m-instruct", spans=[pb.Span(role=pb.SPAN_ROLE_USER, start=1, end=3)]
    )
    chunk = pb.ActivationChunk(
        request_id="m", hook_name=HOOK, start_position=1, activations=to_wire(torch.randn(2, 576)), token_text=["one"]
    )
    msgs = [
        pb.ClientMessage(start=start),
        pb.ClientMessage(chunk=chunk),
        pb.ClientMessage(end=pb.RequestEnd(request_id="m")),
    ]
    with grpc.insecure_channel(sidecar.address) as ch:
        out = list(pb_grpc.MonitorStub(ch).Stream(iter(msgs), timeout=30))
    errors = [r.error for r in out if r.WhichOneof("kind") == "error"]
    assert [(e.code, e.message) for e in errors] == [
        (grpc.StatusCode.INVALID_ARGUMENT.value[0], "1 token_text entries for 2 rows")
    ]
    assert out[-1].WhichOneof("kind") == "done"  # the stream stays open and the request still ends


def test_score_rpc_quotes_text_too(tmp_path, lm):
    sc = SidecarThread(make_config(tmp_path, alert_text="full"))
    try:
        msgs, _ = _messages_with_text(lm, "score-1")
        request = pb.ScoreRequest(
            start=msgs[0].start, chunks=[m.chunk for m in msgs if m.WhichOneof("kind") == "chunk"]
        )
        with grpc.insecure_channel(sc.address) as ch:
            response = pb_grpc.MonitorStub(ch).Score(request, timeout=60)
    finally:
        sc.stop()
    assert any(v.flagged for v in response.verdicts)
    (alert,) = SQLiteSink(tmp_path / "alerts.sqlite").read_all()
    assert SECRET_WORDS in alert.text
