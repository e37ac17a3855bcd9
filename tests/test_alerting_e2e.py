"""End to end through real processes: a harmful generation with capture hooks
on, a live sidecar (alerts to a real redis-server), a real Prometheus scraping
it with the shipped rules, a real Alertmanager with the shipped routing, and a
webhook receiver here that must get the LatentwatchHarmfulCompliance page."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis
import torch
import yaml
from latentwatch.capture import GrpcMonitorClient, HFCapture
from latentwatch.capture.chat import tokenize_chat
from latentwatch.detectors.base import Span
from latentwatch.sidecar.server import SidecarThread
from latentwatch.v1 import monitor_pb2 as pb

from .conftest import HARMFUL, free_port, make_config, start_prometheus, wait_for

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
PACKAGES = "prometheus prometheus-alertmanager"


def _binary(*names: str) -> str:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(f"{names[0]} is not installed; .ci/run installs it (apt-get install {PACKAGES})")


class _Webhook:
    """Alertmanager's webhook receiver: records (path, payload) of each notification."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((self.path, json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def firing(self, alertname: str) -> list[tuple[str, dict]]:
        return [
            (path, a)
            for path, payload in self.received
            for a in payload["alerts"]
            if a["status"] == "firing" and a["labels"]["alertname"] == alertname
        ]


def _alertmanager_config(webhook: _Webhook) -> dict:
    """The shipped config with its receivers pointed here and no waiting before the first notification."""
    cfg = yaml.safe_load((DEPLOY / "alertmanager" / "alertmanager.yml").read_text())
    for receiver in cfg["receivers"]:
        for hook in receiver["webhook_configs"]:
            hook["url"] = webhook.url + urllib.parse.urlparse(hook["url"]).path
    for route in [cfg["route"], *cfg["route"].get("routes", [])]:
        route["group_wait"] = "1s"
    return cfg


def _prometheus_config(sidecar_metrics_port: int, alertmanager_port: int) -> dict:
    """The shipped config, scraping this sidecar every second, with the shipped rules."""
    cfg = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    cfg["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    cfg["rule_files"] = [str(DEPLOY / "prometheus" / f) for f in cfg["rule_files"]]
    cfg["alerting"]["alertmanagers"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]
    [job] = [j for j in cfg["scrape_configs"] if j["job_name"] == "latentwatch"]
    job["static_configs"] = [{"targets": [f"127.0.0.1:{sidecar_metrics_port}"]}]
    cfg["scrape_configs"] = [job]
    return cfg


def _query(prom_port: int, expr: str) -> list[dict] | None:
    url = f"http://127.0.0.1:{prom_port}/api/v1/query?query={urllib.parse.quote(expr)}"
    try:
        return json.load(urllib.request.urlopen(url, timeout=2))["data"]["result"]
    except OSError:
        return None


def _generate(sidecar: SidecarThread, lm, request_id: str, prompt: str) -> list:
    """A real generation with capture hooks streaming to the sidecar; its final verdicts."""
    engine = sidecar.sidecar.engine
    client = GrpcMonitorClient(sidecar.address, lm.model_id)
    capture = HFCapture(lm.model, engine.hook_names, client, heads=engine.heads)
    try:
        assert client.wait_connected(10)
        ct = tokenize_chat(lm.tokenizer, [{"role": "user", "content": prompt}])
        spans = ct.spans + [Span(pb.SPAN_ROLE_RESPONSE, ct.prompt_length, 0)]
        with capture.request(request_id, spans), torch.no_grad():
            lm.model.generate(
                torch.tensor([ct.input_ids]), max_new_tokens=24, do_sample=False, pad_token_id=lm.tokenizer.pad_token_id
            )
        return client.wait_final(request_id, 30) or []
    finally:
        capture.remove()
        client.close()


def test_harmful_generation_pages_through_prometheus_and_alertmanager(tmp_path, lm, redis_url):
    prometheus, alertmanager = _binary("prometheus"), _binary("alertmanager", "prometheus-alertmanager")
    stream = "lw:e2e"
    sidecar = SidecarThread(make_config(tmp_path, redis_url=redis_url, redis_stream=stream))
    webhook = _Webhook()
    am_port, prom_port = free_port(), free_port()
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(_alertmanager_config(webhook)))
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(_prometheus_config(sidecar.sidecar.metrics_port, am_port)))
    procs = [
        subprocess.Popen(
            [
                alertmanager,
                f"--config.file={tmp_path / 'alertmanager.yml'}",
                f"--storage.path={tmp_path / 'am'}",
                f"--web.listen-address=127.0.0.1:{am_port}",
                "--cluster.listen-address=",  # no HA gossip port
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
        start_prometheus(tmp_path / "prometheus.yml", prom_port, tmp_path / "tsdb", prometheus),
    ]
    try:
        # The sidecar exports the counter at 0 before any flag, so the 0 -> 1 step is an increase.
        hc = 'latentwatch_flagged_generations_total{job="latentwatch", detector="harmful_compliance"}'
        wait_for(lambda: _query(prom_port, hc), 30, "Prometheus to scrape the harmful_compliance counter at 0")
        assert float(_query(prom_port, hc)[0]["value"][1]) == 0.0
        assert not webhook.received

        verdicts = _generate(sidecar, lm, "e2e-harm", HARMFUL)
        assert any(v.detector == "harmful_compliance" and v.flagged for v in verdicts), verdicts

        pages = wait_for(lambda: webhook.firing("LatentwatchHarmfulCompliance"), 45, "the page to reach the webhook")
        path, alert = pages[0]
        assert path == "/oncall", "severity=page routes to the on-call receiver"
        assert alert["labels"]["severity"] == "page" and alert["labels"]["job"] == "latentwatch"
        assert "harmful_compliance" in alert["annotations"]["description"]
        # and the alert itself, with the request id and evidence, is in the Redis stream
        entries = redis.Redis.from_url(redis_url, decode_responses=True).xrange(stream)
        hc_entries = [f for _, f in entries if f["detector"] == "harmful_compliance"]
        assert [f["request_id"] for f in hc_entries] == ["e2e-harm"]
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)
        webhook.server.shutdown()
        sidecar.stop()
