"""Consumer groups on the alert stream, against real redis-server processes:
two consumers share the alerts, a dead consumer's entries are taken over, a
poison entry ends in the dead-letter stream, and the same works on a real
three-node Redis Cluster."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest
import redis
from latentwatch.detectors.records import AlertRecord
from latentwatch.export.consumer import AlertConsumer
from latentwatch.export.redis_client import redis_client
from latentwatch.export.sinks import RedisStreamSink
from latentwatch.export.spool import AlertSpool

from .conftest import free_port, wait_for


def _alert(i: int, detector: str = "harmful_request") -> AlertRecord:
    return AlertRecord(
        request_id=f"req-{i}",
        model_id="m",
        detector=detector,
        score=0.9,
        threshold=0.5,
        token_start=1,
        token_end=9,
        timestamp=time.time(),
        explanation=f"alert {i}",
    )


def _emit(url: str, stream: str, n: int, cluster: bool = False) -> list[str]:
    with tempfile.TemporaryDirectory() as d:
        return _emit_via(RedisStreamSink(url, AlertSpool(Path(d) / "spool.sqlite"), stream, cluster=cluster), n)


def _emit_via(sink: RedisStreamSink, n: int) -> list[str]:
    alerts = [_alert(i) for i in range(n)]
    for a in alerts:
        sink.emit(a)
    sink.close()
    return [a.alert_id for a in alerts]


def _pending(client, stream: str, group: str) -> int:
    return client.xpending(stream, group)["pending"]


class _Worker:
    """An AlertConsumer polling on its own thread, recording what its handler saw."""

    def __init__(self, client, stream: str, group: str, name: str, delay_s: float = 0.0, **kw):
        self.seen: list[str] = []
        self.delay_s = delay_s
        self.consumer = AlertConsumer(client, group, name, self._handle, stream=stream, block_s=0.1, **kw)
        self.consumer.ensure_group()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.consumer.run, args=(self._stop,), daemon=True)

    def _handle(self, alert: AlertRecord) -> None:
        time.sleep(self.delay_s)
        self.seen.append(alert.alert_id)

    def start(self) -> _Worker:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def _share_between_two(url: str, cluster: bool) -> None:
    stream, group = f"lw:cg:{uuid.uuid4().hex[:8]}", "oncall"
    clients = [redis_client(url, cluster, decode_responses=True) for _ in range(2)]
    # a small handler delay and batch so that both consumers get a share while the stream fills
    workers = [_Worker(c, stream, group, f"c{i}", delay_s=0.002, batch=5).start() for i, c in enumerate(clients)]
    try:
        ids = _emit(url, stream, 200, cluster)
        wait_for(lambda: sum(len(w.seen) for w in workers) >= 200, 30, "both consumers to handle 200 alerts")
        time.sleep(0.3)  # a duplicate would show up now
    finally:
        for w in workers:
            w.stop()
    a, b = workers[0].seen, workers[1].seen
    assert sorted(a + b) == sorted(ids), "every alert handled exactly once across the two"
    assert a and b, f"both consumers took a share ({len(a)} / {len(b)})"
    assert _pending(clients[0], stream, group) == 0, "all acknowledged"


def test_two_consumers_share_every_alert_exactly_once(redis_url):
    _share_between_two(redis_url, cluster=False)


def test_a_dead_consumers_pending_alerts_are_taken_over(redis_url):
    stream, group = f"lw:cg:{uuid.uuid4().hex[:8]}", "oncall"
    ids = _emit(redis_url, stream, 10)
    # consumer "dead" reads five alerts and dies before acknowledging them
    dead = redis.Redis.from_url(redis_url, decode_responses=True)
    dead.xgroup_create(stream, group, id="0")
    taken = dead.xreadgroup(group, "dead", {stream: ">"}, count=5)[0][1]
    dead.close()
    live = redis.Redis.from_url(redis_url, decode_responses=True)
    assert _pending(live, stream, group) == 5

    worker = _Worker(live, stream, group, "live", claim_idle_s=0.3)
    worker.consumer.poll()  # reads the five nobody has had; the dead one's are not idle long enough yet
    assert sorted(worker.seen) == sorted(ids[5:])
    assert _pending(live, stream, group) == 5
    time.sleep(0.4)
    worker.consumer.poll()
    assert sorted(worker.seen) == sorted(ids), "the dead consumer's five were handled too, once each"
    assert worker.consumer.stats.reclaimed == 5
    assert [RedisStreamSink.parse(f).alert_id for _, f in taken] == ids[:5]
    assert _pending(live, stream, group) == 0
    consumers = {c["name"]: c["pending"] for c in live.xinfo_consumers(stream, group)}
    assert consumers == {"dead": 0, "live": 0}


def test_a_failing_handler_retries_then_dead_letters(redis_url):
    stream, group = f"lw:cg:{uuid.uuid4().hex[:8]}", "oncall"
    ids = _emit(redis_url, stream, 3)
    poison = ids[1]
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    calls: list[str] = []

    def handler(alert: AlertRecord) -> None:
        calls.append(alert.alert_id)
        if alert.alert_id == poison:
            raise RuntimeError("downstream rejected it")

    consumer = AlertConsumer(
        client, group, "c", handler, stream=stream, claim_idle_s=0.05, max_deliveries=3, block_s=0.05
    )
    consumer.ensure_group()

    def buried() -> bool:
        consumer.poll()
        time.sleep(0.06)
        return consumer.stats.dead == 1

    wait_for(buried, 10, "the poison alert to reach the dead-letter stream")
    assert calls.count(poison) == 3, "tried max_deliveries times"
    assert [c for c in calls if c != poison] == [ids[0], ids[2]]
    assert _pending(client, stream, group) == 0
    [(_, fields)] = client.xrange(f"{stream}:dead")
    assert fields["alert_id"] == poison and fields["dead_group"] == group
    assert "failed 3 times" in fields["dead_reason"]


def test_consume_cli_prints_alerts_and_acknowledges(redis_url, tmp_path):
    stream = f"lw:cg:{uuid.uuid4().hex[:8]}"
    ids = _emit(redis_url, stream, 3)
    exe = Path(sys.executable).with_name("latentwatch")
    env = {**os.environ, "LATENTWATCH_REDIS_STREAM": stream}
    cmd = [str(exe), "consume", "--redis-url", redis_url, "--group", "g", "--name", "cli"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = [proc.stdout.readline() for _ in ids]
    finally:
        proc.terminate()  # SIGTERM: finish the alert in hand, then exit 0
        rc = proc.wait(30)
    assert rc == 0, proc.stderr.read()
    got = [AlertRecord.from_dict(json.loads(line)) for line in lines]
    assert [a.alert_id for a in got] == ids and got[0].explanation == "alert 0"
    assert _pending(redis.Redis.from_url(redis_url), stream, "g") == 0


def test_consume_cli_without_redis_is_a_usage_error(capsys, monkeypatch):
    from latentwatch.cli import main

    monkeypatch.delenv("LATENTWATCH_REDIS_URL", raising=False)
    assert main(["consume"]) == 2
    assert "needs --redis-url" in capsys.readouterr().err


# -- Redis Cluster ---------------------------------------------------------------------------------------------


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    while True:
        port = free_port()
        if port + 10000 < 65536:
            try:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port + 10000))
                return port
            except OSError:
                continue


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory):
    """A real three-master Redis Cluster on loopback; yields the URL of its first node."""
    exe, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if exe is None or cli is None:
        pytest.fail(
            "redis-server and redis-cli are not installed; .ci/run installs them (apt-get install redis-server)"
        )
    ports = [_cluster_port() for _ in range(3)]
    procs = []
    for port in ports:
        d = tmp_path_factory.mktemp(f"cluster{port}")
        procs.append(
            subprocess.Popen(
                [
                    exe,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    str(d / "nodes.conf"),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(d),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    try:
        for port in ports:
            wait_for(lambda p=port: _up(p), 10, f"cluster node {port} to start")
        create = subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert create.returncode == 0, create.stdout + create.stderr
        for port in ports:
            wait_for(lambda p=port: _cluster_ok(p), 30, f"node {port} to see the cluster as ok")
        yield f"redis://127.0.0.1:{ports[0]}/0"
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)


def _up(port: int) -> bool:
    try:
        return redis.Redis(port=port).ping()
    except redis.RedisError:
        return False


def _cluster_ok(port: int) -> bool:
    return redis.Redis(port=port, decode_responses=True).cluster("INFO").get("cluster_state") == "ok"


def _key_on_another_node(url: str) -> str:
    """A stream key that the node at ``url`` does not own (a plain client gets MOVED for it)."""
    node = redis.Redis.from_url(url)
    for i in range(100):
        key = f"lw{i}:alerts"
        try:
            node.xlen(key)
        except redis.exceptions.MovedError:
            return key
    raise AssertionError("no key off the first node in 100 tries")


def test_redis_cluster_sink_and_consumer_group(redis_cluster):
    stream = _key_on_another_node(redis_cluster)
    with pytest.raises(redis.exceptions.MovedError):  # why the cluster client is needed
        redis.Redis.from_url(redis_cluster).xadd(stream, {"a": "1"})
    ids = _emit(redis_cluster, stream, 20, cluster=True)
    client = redis_client(redis_cluster, cluster=True, decode_responses=True)
    assert client.xlen(stream) == 20
    seen: list[str] = []
    consumer = AlertConsumer(client, "oncall", "c", lambda a: seen.append(a.alert_id), stream=stream, block_s=0.1)
    consumer.ensure_group()
    consumer.poll()
    assert seen == ids
    assert _pending(client, stream, "oncall") == 0


def test_redis_cluster_two_consumers_share_the_stream(redis_cluster):
    _share_between_two(redis_cluster, cluster=True)
