"""Alerts survive Redis going away: a real redis-server is killed mid-run and
started again on the same port, and every alert is found in the stream, in
the order it was raised (repeats only with the same alert_id)."""

from __future__ import annotations

import threading
import time

import grpc
import redis
from latentwatch.sidecar.server import SidecarThread
from latentwatch.v1 import monitor_pb2_grpc as pb_grpc

from .conftest import HARMFUL, RedisServer, make_config, metric, stream_messages, transcript, wait_for

HOOK = "model.layers.12"
STREAM = "lw:spool-test"


def _stream_entries(url: str) -> list[dict[str, str]]:
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        return [fields for _id, fields in client.xrange(STREAM)]
    finally:
        client.close()


def _assert_every_alert_once_in_order(entries: list[dict[str, str]], request_ids: list[str]) -> None:
    first_seen: dict[str, str] = {}
    for e in entries:
        # a repeat (at-least-once) must carry the same idempotency key for the same alert
        assert first_seen.setdefault(e["alert_id"], e["request_id"]) == e["request_id"]
    assert list(first_seen.values()) == request_ids  # nothing lost, and in the order raised
    assert all(e["detector"] == "harmful_request" for e in entries)


def test_no_alert_is_lost_when_redis_is_killed_mid_run_and_restarted(tmp_path, lm):
    server = RedisServer(tmp_path / "redis", durable=True)
    server.start()
    sc = SidecarThread(make_config(tmp_path, redis_url=server.url, redis_stream=STREAM))
    spans, rows = transcript(lm, HARMFUL, [HOOK])
    request_ids = [f"harm-{i:03d}" for i in range(60)]
    done: list[str] = []

    def messages():
        for rid in request_ids:
            yield from stream_messages(rid, lm.model_id, spans, rows)
            time.sleep(0.05)  # a steady trickle, so Redis dies and returns while requests flow

    def send() -> None:
        with grpc.insecure_channel(sc.address) as ch:
            for r in pb_grpc.MonitorStub(ch).Stream(messages(), timeout=120):
                if r.WhichOneof("kind") == "done":
                    done.append(r.done.request_id)

    sender = threading.Thread(target=send)
    try:
        sender.start()
        wait_for(lambda: len(done) >= 15, 60, "the first alerts to stream")
        server.kill()
        wait_for(lambda: len(done) >= 35, 60, "alerts raised while Redis is down")
        spooled_while_down = metric(sc, "latentwatch_spooled_alerts")
        server.start()  # same port, same append-only file
        sender.join(120)
        assert done == request_ids  # scoring never waited for Redis
        wait_for(lambda: metric(sc, "latentwatch_spooled_alerts") == 0, 60, "the spool to drain")
        entries = _stream_entries(server.url)
        spooled = metric(sc, "latentwatch_alerts_spooled_total")
        replayed = metric(sc, "latentwatch_alerts_replayed_total")
        lost = metric(sc, 'latentwatch_alert_sink_failures_total{sink="redis"}')
    finally:
        sc.stop()
        server.stop()
    assert spooled_while_down > 0
    assert spooled >= 20 and replayed == spooled and lost == 0
    _assert_every_alert_once_in_order(entries, request_ids)
    assert len(entries) <= len(request_ids) + 1  # at most the one XADD in flight when Redis died repeats


def test_spooled_alerts_survive_a_sidecar_restart(tmp_path, lm):
    server = RedisServer(tmp_path / "redis")  # not started yet: Redis is down
    cfg = make_config(tmp_path, redis_url=server.url, redis_stream=STREAM)
    spans, rows = transcript(lm, HARMFUL, [HOOK])
    request_ids = [f"early-{i}" for i in range(5)]
    msgs = [m for rid in request_ids for m in stream_messages(rid, lm.model_id, spans, rows)]
    sc = SidecarThread(cfg)
    try:
        with grpc.insecure_channel(sc.address) as ch:
            list(pb_grpc.MonitorStub(ch).Stream(iter(msgs), timeout=60))
        assert metric(sc, "latentwatch_spooled_alerts") == 5
        assert metric(sc, "latentwatch_alerts_spooled_total") == 5
    finally:
        sc.stop()  # the spool stays on disk
    server.start()
    sc = SidecarThread(cfg)  # a new sidecar on the same spool file replays it
    try:
        wait_for(lambda: metric(sc, "latentwatch_spooled_alerts") == 0, 30, "the new sidecar to replay the spool")
        assert metric(sc, "latentwatch_alerts_replayed_total") == 5
        entries = _stream_entries(server.url)
    finally:
        sc.stop()
        server.stop()
    _assert_every_alert_once_in_order(entries, request_ids)
