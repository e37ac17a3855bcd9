"""Alerts leave the scoring path: a Redis that accepts connections and never answers
stalls only the export thread. Other requests are scored while the flagged request's
alert waits on that Redis, and the alert is then spooled, not lost."""

from __future__ import annotations

import socket
import threading
import time

import grpc
from latentwatch.sidecar.server import SidecarThread
from latentwatch.v1 import monitor_pb2_grpc as pb_grpc

from .conftest import BENIGN, HARMFUL, make_config, metric, score_request, wait_for

HOOK = "model.layers.12"
REDIS_TIMEOUT_S = 20.0  # how long the sink waits on the silent Redis before it spools


class SilentRedis:
    """A TCP server that accepts connections, reads what they send and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.received = bytearray()
        self.connections: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            self.received += data

    def close(self) -> None:
        self.sock.close()
        for c in self.connections:
            c.close()


def test_a_redis_that_never_answers_does_not_delay_scoring(tmp_path, lm):
    silent = SilentRedis()
    cfg = make_config(tmp_path, redis_url=f"redis://127.0.0.1:{silent.port}/0", redis_timeout_s=REDIS_TIMEOUT_S)
    sc = SidecarThread(cfg)
    try:
        with grpc.insecure_channel(sc.address) as ch:
            stub = pb_grpc.MonitorStub(ch)
            harmful = score_request("harm", lm, HARMFUL, [HOOK])
            benign = [score_request(f"ok-{i}", lm, BENIGN, [HOOK]) for i in range(3)]  # forwards before timing
            t0 = time.perf_counter()
            flagged = {v.detector: v for v in stub.Score(harmful, timeout=60).verdicts}
            harmful_s = time.perf_counter() - t0
            assert flagged["harmful_request"].flagged
            # The alert is now with the export thread, which is stuck on the silent Redis.
            wait_for(lambda: len(silent.received) > 0, 30, "the sink to talk to the silent Redis")
            benign_s = []
            for request in benign:
                t0 = time.perf_counter()
                verdicts = stub.Score(request, timeout=60).verdicts
                benign_s.append(time.perf_counter() - t0)
                assert not {v.detector: v for v in verdicts}["harmful_request"].flagged
            # Every request above was answered while the alert was still waiting on Redis:
            # nothing has timed out into the spool yet, and nothing was dropped.
            assert metric(sc, "latentwatch_alerts_spooled_total") == 0
            assert metric(sc, "latentwatch_alerts_queued") == 1
            print(f"flagged request {harmful_s * 1e3:.0f} ms; benign requests meanwhile "
                  f"{', '.join(f'{s * 1e3:.0f}' for s in benign_s)} ms")  # fmt: skip
        wait_for(lambda: metric(sc, "latentwatch_alerts_spooled_total") == 1, REDIS_TIMEOUT_S * 3, "the spool")
        assert metric(sc, "latentwatch_alerts_queued") == 0
        assert metric(sc, 'latentwatch_alert_sink_failures_total{sink="redis"}') == 0  # spooled, not lost
        assert metric(sc, "latentwatch_alerts_dropped_total") == 0
    finally:
        sc.stop()
        silent.close()


def test_a_full_export_queue_drops_and_counts_without_blocking(tmp_path, lm):
    """With room for one waiting alert, the second flagged request's alert is dropped and
    counted while the first waits on the silent Redis; both requests are answered."""
    silent = SilentRedis()
    cfg = make_config(
        tmp_path, redis_url=f"redis://127.0.0.1:{silent.port}/0", redis_timeout_s=REDIS_TIMEOUT_S, alert_queue_size=1
    )
    sc = SidecarThread(cfg)
    try:
        with grpc.insecure_channel(sc.address) as ch:
            stub = pb_grpc.MonitorStub(ch)
            stub.Score(score_request("harm-0", lm, HARMFUL, [HOOK]), timeout=60)
            wait_for(lambda: len(silent.received) > 0, 30, "the sink to talk to the silent Redis")
            stub.Score(score_request("harm-1", lm, HARMFUL, [HOOK]), timeout=60)  # waits in the queue
            verdicts = stub.Score(score_request("harm-2", lm, HARMFUL, [HOOK]), timeout=60).verdicts  # queue full
            assert {v.detector: v for v in verdicts}["harmful_request"].flagged
            assert metric(sc, "latentwatch_alerts_dropped_total") == 1
            assert metric(sc, 'latentwatch_alerts_total{detector="harmful_request"}') == 3
    finally:
        sc.stop()
        silent.close()
