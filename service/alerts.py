"""Alert sinks: Redis Streams when a Redis URL is configured, a local SQLite
file otherwise, and an in-memory fan-out feeding ``WatchAlerts``.

Sinks are called from the scoring thread. A sink that fails (Redis down)
must not stop scoring: ``FanOut`` counts the failure and carries on.
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

from latentwatch.records import AlertRecord
from latentwatch.redis_client import redis_client

log = logging.getLogger(__name__)


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
        for column in ("explanation", "text"):
            if column not in have:
                self._db.execute(f"ALTER TABLE alerts ADD COLUMN {column} TEXT NOT NULL DEFAULT ''")
        self._db.commit()

    def emit(self, alert: AlertRecord) -> None:
        d = alert.to_dict()
        d["evidence"] = json.dumps(d["evidence"])
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
            r["evidence"] = json.loads(r["evidence"])
            r["low_confidence"] = bool(r["low_confidence"])
        return [AlertRecord.from_dict(r) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class RedisStreamSink:
    """``XADD stream MAXLEN ~ n`` with the alert's scalar fields flat and its
    evidence as JSON, so consumers can filter without parsing."""

    name = "redis"

    def __init__(self, url: str, stream: str = "latentwatch:alerts", maxlen: int = 100_000, cluster: bool = False):
        self.stream = stream
        self.maxlen = maxlen
        self._url, self._cluster = url, cluster
        self._r = None  # connected on first use: a cluster client connects when built, and Redis may be down now

    def _client(self):
        if self._r is None:
            self._r = redis_client(self._url, self._cluster, socket_timeout=0.5, socket_connect_timeout=0.5)
        return self._r

    @staticmethod
    def fields(alert: AlertRecord) -> dict[str, str]:
        d = alert.to_dict()
        d["evidence"] = json.dumps(d["evidence"])
        d["low_confidence"] = int(d["low_confidence"])
        return {k: str(v) for k, v in d.items()}

    @staticmethod
    def parse(fields: dict[str, str]) -> AlertRecord:
        """The inverse of ``fields``: a stream entry (decoded) back into an alert.
        Fields this version does not know are ignored (the schema grows additively)."""
        known = {f.name for f in dataclasses.fields(AlertRecord)}
        d: dict = {k: v for k, v in fields.items() if k in known}
        d["evidence"] = json.loads(d.get("evidence", "[]"))
        d["low_confidence"] = d.get("low_confidence") == "1"
        for k in ("score", "threshold", "timestamp"):
            d[k] = float(d[k])
        for k in ("token_start", "token_end"):
            d[k] = int(d[k])
        return AlertRecord.from_dict(d)

    def emit(self, alert: AlertRecord) -> None:
        self._client().xadd(self.stream, self.fields(alert), maxlen=self.maxlen, approximate=True)

    def close(self) -> None:
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
