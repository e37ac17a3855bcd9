"""Alerts in a real Redis stream and SQLite; metrics scraped by a real
Prometheus server and linted by promtool."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request

import grpc
import pytest
import redis
from latentwatch.export.sinks import SQLiteSink
from latentwatch.sidecar.server import SidecarThread
from latentwatch.v1 import monitor_pb2_grpc as pb_grpc

from .conftest import BENIGN, HARMFUL, free_port, make_config, start_prometheus, stream_messages, transcript, wait_for

HOOK = "model.layers.12"


def _send(address, lm, items):
    msgs = []
    for rid, prompt in items:
        spans, rows = transcript(lm, prompt, [HOOK])
        msgs += list(stream_messages(rid, lm.model_id, spans, rows))
    with grpc.insecure_channel(address) as ch:
        return list(pb_grpc.MonitorStub(ch).Stream(iter(msgs), timeout=60))


def test_alert_reaches_redis_stream(tmp_path, lm, redis_url):
    sc = SidecarThread(make_config(tmp_path, redis_url=redis_url, redis_stream="lw:test"))
    try:
        _send(sc.address, lm, [("harm-1", HARMFUL), ("ok-1", BENIGN)])
    finally:
        sc.stop()
    entries = redis.Redis.from_url(redis_url, decode_responses=True).xrange("lw:test")
    assert len(entries) == 1
    fields = entries[0][1]
    assert fields["request_id"] == "harm-1" and fields["detector"] == "harmful_request"
    assert fields["model_id"] == lm.model_id
    assert float(fields["score"]) >= float(fields["threshold"])
    assert int(fields["token_end"]) > int(fields["token_start"])
    evidence = json.loads(fields["evidence"])
    assert evidence and {"index", "activation", "label", "contribution"} <= set(evidence[0])
    assert float(fields["timestamp"]) > 1.7e9
    assert not (tmp_path / "alerts.sqlite").exists()  # Redis configured: no SQLite


def test_alert_lands_in_sqlite_by_default(tmp_path, lm):
    sc = SidecarThread(make_config(tmp_path))
    try:
        _send(sc.address, lm, [("harm-2", HARMFUL), ("ok-2", BENIGN)])
    finally:
        sc.stop()
    alerts = SQLiteSink(tmp_path / "alerts.sqlite").read_all()
    assert [(a.request_id, a.detector) for a in alerts] == [("harm-2", "harmful_request")]
    assert alerts[0].evidence


def test_redis_down_does_not_stop_scoring(tmp_path, lm):
    sc = SidecarThread(make_config(tmp_path, redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    try:
        responses = _send(sc.address, lm, [("harm-3", HARMFUL)])
        url = f"http://127.0.0.1:{sc.sidecar.metrics_port}/metrics"

        # alerts leave through a background exporter: the verdict can arrive before the spool write
        def spooled() -> str | None:
            text = urllib.request.urlopen(url).read().decode()
            return text if "latentwatch_alerts_spooled_total 1.0" in text else None

        metrics = wait_for(spooled, 30, "the alert to reach the spool")
    finally:
        sc.stop()
    finals = [r.verdict for r in responses if r.WhichOneof("kind") == "verdict" and r.verdict.final]
    assert finals and finals[0].flagged
    # the alert waits in the local spool (tests/test_alert_spool.py replays it); nothing is lost
    assert "latentwatch_alerts_spooled_total 1.0" in metrics
    assert "latentwatch_spooled_alerts 1.0" in metrics
    assert 'latentwatch_alert_sink_failures_total{sink="redis"} 0.0' in metrics  # declared at 0, nothing lost


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="needs Debian's prometheus (installed by .ci/run)")
def test_real_prometheus_scrapes_flagged_counter(tmp_path, lm):
    sc = SidecarThread(make_config(tmp_path))
    prom_port = free_port()
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: latentwatch\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{sc.sidecar.metrics_port}']}}]\n"
    )
    prom = start_prometheus(tmp_path / "prometheus.yml", prom_port, tmp_path / "tsdb")
    try:
        _send(sc.address, lm, [("harm-p", HARMFUL), ("ok-p", BENIGN)])
        body = urllib.request.urlopen(f"http://127.0.0.1:{sc.sidecar.metrics_port}/metrics").read()
        lint = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True)
        assert lint.returncode == 0, lint.stdout.decode() + lint.stderr.decode()

        def flagged():
            q = urllib.parse.quote('latentwatch_flagged_generations_total{detector="harmful_request"}')
            try:
                res = json.load(urllib.request.urlopen(f"http://127.0.0.1:{prom_port}/api/v1/query?query={q}"))
            except OSError:
                return None
            result = res["data"]["result"]
            return result and float(result[0]["value"][1])

        assert wait_for(flagged, 60, "Prometheus to scrape the flagged counter") == 1.0
    finally:
        prom.terminate()
        prom.wait(10)
        sc.stop()
