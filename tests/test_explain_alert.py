"""``latentwatch explain-alert``: a real alert (SmolLM2 rows over gRPC into a sidecar) read back
from SQLite and from a Redis stream, shown in the terminal and as a page rendered by headless
Chromium, with the tokens its attribution names."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import grpc
import pytest
import redis
from latentwatch.export.sinks import SQLiteSink
from latentwatch.sidecar.server import SidecarThread
from latentwatch.v1 import monitor_pb2_grpc as pb_grpc

from .conftest import make_config
from .test_alert_text import _messages_with_text
from .test_cli import run_cli


def _alert(tmp_path, lm, **cfg):
    """Stream the harmful request (with token text) to a sidecar; return the messages' pieces."""
    sc = SidecarThread(make_config(tmp_path, **cfg))
    try:
        msgs, pieces = _messages_with_text(lm, "explain-1")
        with grpc.insecure_channel(sc.address) as ch:
            list(pb_grpc.MonitorStub(ch).Stream(iter(msgs), timeout=60))
    finally:
        sc.stop()
    return pieces


def test_explain_alert_from_sqlite_in_terminal_and_in_a_browser(tmp_path, lm):
    pieces = _alert(tmp_path, lm, alert_text="full")
    db = tmp_path / "alerts.sqlite"
    (alert,) = [a for a in SQLiteSink(db).read_all() if a.detector == "harmful_request"]
    shares = [a for a in alert.attribution if not a.expected]
    assert shares and all(a.text == pieces[a.position] for a in shares)  # full: each token's own text
    top = max(shares, key=lambda a: a.contribution)

    page = tmp_path / "alert.html"
    r = run_cli("explain-alert", alert.alert_id[:10], "--sqlite", str(db), "--html", str(page), "--no-color")
    assert r.returncode == 0, r.stderr
    assert alert.alert_id in r.stdout and "harmful_request" in r.stdout
    assert f"[{top.text}|{top.contribution:+.2f}]" in r.stdout  # the plain view marks each token's share
    listed = re.findall(r"^\s+(\d+): ([+-][\d.]+)", r.stdout.split("top tokens")[1], re.M)
    assert int(listed[0][0]) == top.position

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium is not installed (.ci/run installs Debian's chromium)")
    dom = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip
    spans = re.findall(r'<span[^>]*class="tok[^"]*"[^>]*data-position="(\d+)"[^>]*>([^<]*)</span>', dom)
    assert [int(p) for p, _ in spans] == [a.position for a in alert.attribution]  # rendered, in order
    by_position = dict(spans)
    assert by_position[str(top.position)] == top.text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    assert f"<td>{top.position}</td>" in dom  # first row of the top-tokens table


def test_explain_alert_from_redis_shows_positions_without_text(tmp_path, lm, redis_url):
    stream = "lw:explain"
    _alert(tmp_path, lm, alert_text="none", redis_url=redis_url, redis_stream=stream)
    entries = redis.Redis.from_url(redis_url, decode_responses=True).xrange(stream)
    fields = next(f for _, f in entries if f["detector"] == "harmful_request")
    attribution = json.loads(fields["attribution"])
    assert attribution and all(a["text"] == "" for a in attribution)

    cfg = tmp_path / "lw.yaml"
    cfg.write_text(f"redis_url: {redis_url}\nredis_stream: {stream}\n")
    r = run_cli("explain-alert", fields["alert_id"], "--config", str(cfg), "--no-color")
    assert r.returncode == 0, r.stderr
    top = max(attribution, key=lambda a: a["contribution"])
    assert f"[⟨{top['position']}⟩|" in r.stdout


def test_explain_alert_refuses_unknown_ids_with_a_sentence(tmp_path, lm):
    _alert(tmp_path, lm, alert_text="none")
    db = str(tmp_path / "alerts.sqlite")
    for alert_id, words in (("0123456789abcdef", "no alert '0123456789abcdef'"), ("ab", "at least 8 characters")):
        r = run_cli("explain-alert", alert_id, "--sqlite", db)
        assert r.returncode == 2 and words in r.stderr, r.stderr
    r = run_cli("explain-alert", "0123456789abcdef", "--sqlite", str(tmp_path / "none.sqlite"))
    assert r.returncode == 2 and "no SQLite alert file" in r.stderr
