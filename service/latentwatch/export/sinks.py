"""Alert sinks: Redis Streams when a Redis URL is configured (spooling to a
local file while Redis is away), a local SQLite file otherwise, and an
in-memory fan-out feeding ``WatchAlerts``.

Sinks are called from the export queue's thread (``latentwatch.export.exporter``),
never while the engine scores. A sink that fails (Redis down) must not stop the
others: ``FanOut`` counts the failure and carries on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from latentwatch.detectors.records import AlertRecord
from latentwatch.export.metrics import Metrics
from latentwatch.export.redis_client import redis_client
from latentwatch.export.spool import AlertSpool

log = logging.getLogger(__name__)
JSON_FIELDS = ("evidence", "attribution")  # alert fields stored as JSON text (SQLite columns, stream fields)


class AlertSink(Protocol):
    name: str

    def emit(self, alert: AlertRecord) -> None: ...

    def close(self) -> None: ...


class SQLiteSink:
    """Alerts as rows of a local SQLite file (the embedded default)."""

    name = "sqlite"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS alerts ("
            " alert_id TEXT PRIMARY KEY, request_id TEXT, model_id TEXT, detector TEXT,"
            " score REAL, threshold REAL, token_start INTEGER, token_end INTEGER,"
            " timestamp REAL, low_confidence INTEGER, evidence TEXT)"
        )
        # Columns added since the first schema: new files and files written before get them alike.
        have = {row[1] for row in self._db.execute("PRAGMA table_info(alerts)")}
        for column, default in (("explanation", "''"), ("text", "''"), ("attribution", "'[]'"), ("action", "''")):
            if column not in have:
                self._db.execute(f"ALTER TABLE alerts ADD COLUMN {column} TEXT NOT NULL DEFAULT {default}")
        self._db.commit()

    def emit(self, alert: AlertRecord) -> None:
        d = alert.to_dict()
        for k in JSON_FIELDS:
            d[k] = json.dumps(d[k])
        d["low_confidence"] = int(d["low_confidence"])
        columns = ", ".join(d)
        with self._lock:
            self._db.execute(
                f"INSERT OR IGNORE INTO alerts ({columns}) VALUES ({', '.join(':' + k for k in d)})",
                d,
            )
            self._db.commit()

    def read_all(self) -> list[AlertRecord]:
        with self._lock:
            cur = self._db.execute("SELECT * FROM alerts ORDER BY timestamp")
            cols = [c[0] for c in cur.description]
            rows = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
        for r in rows:
            for k in JSON_FIELDS:
                r[k] = json.loads(r[k])
            r["low_confidence"] = bool(r["low_confidence"])
        return [AlertRecord.from_dict(r) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class RedisStreamSink:
    """``XADD stream MAXLEN ~ n`` with the alert's scalar fields flat and its
    evidence as JSON, so consumers can filter without parsing.

    When an XADD fails (Redis down, restarting, unreachable) the entry goes to
    a durable local spool instead, and every later alert follows it there
    until a background thread has replayed the spool, oldest first, so the
    stream keeps the order alerts were raised in. Delivery is at least once:
    an entry whose XADD reached Redis but whose reply was lost is sent again;
    its ``alert_id`` field lets consumers drop the repeat.
    """

    name = "redis"
    REPLAY_BATCH = 100  # entries per MULTI/EXEC while draining the spool

    def __init__(
        self,
        url: str,
        spool: AlertSpool,
        stream: str = "latentwatch:alerts",
        maxlen: int = 100_000,
        metrics: Metrics | None = None,
        retry_initial_s: float = 0.1,
        retry_max_s: float = 5.0,
        cluster: bool = False,
        timeout_s: float = 0.5,
    ):
        import redis

        self.stream = stream
        self.maxlen = maxlen
        self.spool = spool
        self._errors = (redis.RedisError, OSError)
        self._url, self._cluster, self._timeout = url, cluster, timeout_s
        self._r = None  # connected on first use: a cluster client connects when built, and Redis may be down now
        self._metrics = metrics or Metrics()
        self._metrics.spooled_alerts.set_function(lambda: len(self.spool))
        self._retry = (retry_initial_s, retry_max_s)
        self._lock = threading.Lock()  # orders "stream directly or spool" decisions
        self._wake = threading.Event()
        self._stop = threading.Event()
        if len(spool):
            self._wake.set()  # entries left by an earlier run go first
        self._replayer = threading.Thread(target=self._replay_loop, name="latentwatch-spool-replay", daemon=True)
        self._replayer.start()

    def _client(self):
        if self._r is None:
            self._r = redis_client(
                self._url, self._cluster, socket_timeout=self._timeout, socket_connect_timeout=self._timeout
            )
        return self._r

    @staticmethod
    def fields(alert: AlertRecord) -> dict[str, str]:
        d = alert.to_dict()
        for k in JSON_FIELDS:
            d[k] = json.dumps(d[k])
        d["low_confidence"] = int(d["low_confidence"])
        return {k: str(v) for k, v in d.items()}

    @staticmethod
    def parse(fields: dict[str, str]) -> AlertRecord:
        """The inverse of ``fields``: a stream entry (decoded) back into an alert.
        Fields this version does not know are ignored (the schema grows additively)."""
        known = {f.name for f in dataclasses.fields(AlertRecord)}
        d: dict = {k: v for k, v in fields.items() if k in known}
        for k in JSON_FIELDS:
            d[k] = json.loads(d.get(k, "[]"))
        d["low_confidence"] = d.get("low_confidence") == "1"
        for k in ("score", "threshold", "timestamp"):
            d[k] = float(d[k])
        for k in ("token_start", "token_end"):
            d[k] = int(d[k])
        return AlertRecord.from_dict(d)

    def emit(self, alert: AlertRecord) -> None:
        fields = self.fields(alert)
        with self._lock:
            # Straight to Redis only when nothing older waits in the spool; otherwise
            # this alert would overtake them (and pay a timeout while Redis is down).
            if not len(self.spool):
                try:
                    self._client().xadd(self.stream, fields, maxlen=self.maxlen, approximate=True)
                    return
                except self._errors as exc:
                    log.warning("redis XADD failed (%s); spooling alerts to %s", exc, self.spool.path)
            self.spool.push(fields)  # if this raises too, FanOut counts the alert as lost
            self._metrics.alerts_spooled.inc()
        self._wake.set()

    def _replay_loop(self) -> None:
        delay = self._retry[0]
        while not self._stop.is_set():
            batch = self.spool.peek(self.REPLAY_BATCH)
            if not batch:
                self._wake.wait()
                self._wake.clear()
                continue
            try:
                pipe = self._client().pipeline(transaction=True)  # all or none of the batch, in order
                for _seq, fields in batch:
                    pipe.xadd(self.stream, fields, maxlen=self.maxlen, approximate=True)
                pipe.execute()
            except self._errors as exc:
                log.debug("spool replay failed (%s); retrying in %.2fs", exc, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, self._retry[1])
                continue
            self.spool.remove_through(batch[-1][0])
            self._metrics.alerts_replayed.inc(len(batch))
            delay = self._retry[0]

    def close(self) -> None:
        """Stop replaying; what is still spooled stays on disk for the next sidecar."""
        self._stop.set()
        self._wake.set()
        self._replayer.join(timeout=5)
        if self._replayer.is_alive():
            # Still inside a Redis call (connect timeout): closing the client or the
            # spool under it would raise in that thread. It exits at its next check.
            log.warning("spool replay did not stop within 5 s; leaving it to exit on its own")
            return
        self.spool.close()
        if self._r is not None:
            self._r.close()


class Broadcaster:
    """Hands alerts to ``WatchAlerts`` subscribers on the server's event loop.

    Each subscriber has a bounded queue; a subscriber too slow to keep up
    loses alerts (counted) rather than holding up scoring.
    """

    name = "watchers"

    def __init__(self, on_drop: Callable[[], None] = lambda: None):
        self._subs: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Queue, frozenset[str]]] = {}
        self._lock = threading.Lock()
        self._next = 0
        self._on_drop = on_drop

    def subscribe(self, detectors: frozenset[str], maxsize: int = 1000) -> tuple[int, asyncio.Queue]:
        q: asyncio.Queue = asyncio.Queue(maxsize=maxsize)
        with self._lock:
            key = self._next
            self._next += 1
            self._subs[key] = (asyncio.get_running_loop(), q, detectors)
        return key, q

    def unsubscribe(self, key: int) -> None:
        with self._lock:
            self._subs.pop(key, None)

    def emit(self, alert: AlertRecord) -> None:
        with self._lock:
            subs = list(self._subs.values())
        for loop, q, wanted in subs:
            if wanted and alert.detector not in wanted:
                continue
            loop.call_soon_threadsafe(self._put, q, alert)

    def _put(self, q: asyncio.Queue, alert: AlertRecord) -> None:
        try:
            q.put_nowait(alert)
        except asyncio.QueueFull:
            self._on_drop()

    def close(self) -> None:
        with self._lock:
            self._subs.clear()


class FanOut:
    """Sends each alert to every sink; one failing sink never blocks the others."""

    def __init__(self, sinks: list[AlertSink], on_failure: Callable[[str], None] = lambda name: None):
        self.sinks = sinks
        self._on_failure = on_failure

    def emit(self, alert: AlertRecord) -> None:
        for sink in self.sinks:
            try:
                sink.emit(alert)
            except Exception as exc:  # noqa: BLE001 - a sink must never stop scoring
                log.warning("alert sink %s failed: %s", sink.name, exc)
                self._on_failure(sink.name)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
