"""Share the alert stream among several workers with a Redis consumer group.

Every sidecar XADDs to one stream (``latentwatch:alerts``). Workers that act on
alerts (page someone, open a ticket, copy to a warehouse) join a consumer
group: Redis hands each entry to exactly one consumer of the group, and the
consumer acknowledges it (XACK) only after its handler returned. An entry
whose consumer died or failed before acknowledging stays pending; once it has
been idle for ``claim_idle_s``, any live consumer takes it over (XAUTOCLAIM)
and handles it, so nothing is lost when a worker dies. Delivery is therefore
at least once: a consumer that finished a handler but died before its XACK
causes one repeat, which the alert's ``alert_id`` identifies. An entry whose
handler has failed ``max_deliveries`` times goes to ``<stream>:dead`` (with
the reason) and is acknowledged, so one poison entry cannot loop forever.

Several groups on the same stream each see every alert (one group per purpose).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import redis

from latentwatch.detectors.records import AlertRecord
from latentwatch.export.sinks import RedisStreamSink

log = logging.getLogger(__name__)

Handler = Callable[[AlertRecord], None]


@dataclass
class ConsumerStats:
    handled: int = 0  # handler returned and the entry was acknowledged
    failed: int = 0  # handler raised; the entry stays pending for a retry
    reclaimed: int = 0  # entries taken over from a consumer that left them pending
    dead: int = 0  # entries moved to the dead-letter stream


class AlertConsumer:
    """One member of a consumer group on the alert stream.

    ``client`` must decode responses (``decode_responses=True``); see
    ``latentwatch.export.redis_client.redis_client`` for a single server or a cluster.
    """

    def __init__(
        self,
        client: redis.Redis,
        group: str,
        name: str,
        handler: Handler,
        stream: str = "latentwatch:alerts",
        claim_idle_s: float = 60.0,
        max_deliveries: int = 5,
        batch: int = 100,
        block_s: float = 1.0,
    ):
        if claim_idle_s <= 0 or max_deliveries < 1 or batch < 1:
            raise ValueError("claim_idle_s must be > 0, max_deliveries >= 1 and batch >= 1")
        self.r, self.group, self.name, self.handler = client, group, name, handler
        self.stream = stream
        self.dead_stream = f"{stream}:dead"
        self.claim_idle_ms = int(claim_idle_s * 1000)
        self.max_deliveries = max_deliveries
        self.batch = batch
        self.block_ms = int(block_s * 1000)
        self.stats = ConsumerStats()
        self._claim_cursor = "0-0"

    def ensure_group(self, start_id: str = "0") -> None:
        """Create the group (and the stream) if missing. ``start_id`` ``0`` makes a
        new group read the whole retained stream, ``$`` only alerts from now on."""
        try:
            self.r.xgroup_create(self.stream, self.group, id=start_id, mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def poll(self) -> int:
        """One round: take over entries other consumers left pending too long,
        then read new ones (waiting up to ``block_s``). Returns entries handled."""
        before = self.stats.handled
        self._reclaim()
        reply = self.r.xreadgroup(self.group, self.name, {self.stream: ">"}, count=self.batch, block=self.block_ms)
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                self._handle(entry_id, fields)
        return self.stats.handled - before

    def run(self, stop: threading.Event) -> None:
        """Poll until ``stop`` is set."""
        self.ensure_group()
        while not stop.is_set():
            self.poll()

    def _reclaim(self) -> None:
        cursor, entries, *_deleted = self.r.xautoclaim(
            self.stream, self.group, self.name, self.claim_idle_ms, start_id=self._claim_cursor, count=self.batch
        )
        self._claim_cursor = cursor  # walks the whole pending list over successive polls
        if not entries:
            return
        deliveries = self._deliveries([entry_id for entry_id, _ in entries])
        for entry_id, fields in entries:
            self.stats.reclaimed += 1
            if not fields:  # trimmed from the stream (MAXLEN) while pending: nothing left to handle
                self.r.xack(self.stream, self.group, entry_id)
            elif deliveries.get(entry_id, 0) > self.max_deliveries:
                self._bury(entry_id, fields, f"handler failed {self.max_deliveries} times")
            else:
                self._handle(entry_id, fields)

    def _deliveries(self, ids: list[str]) -> dict[str, int]:
        """How often each of our pending ``ids`` has been delivered (XAUTOCLAIM counts one more)."""
        pipe = self.r.pipeline(transaction=False)
        for entry_id in ids:
            pipe.xpending_range(self.stream, self.group, min=entry_id, max=entry_id, count=1)
        return {p["message_id"]: p["times_delivered"] for rows in pipe.execute() for p in rows}

    def _handle(self, entry_id: str, fields: dict[str, str]) -> None:
        try:
            alert = RedisStreamSink.parse(fields)
        except (KeyError, ValueError, TypeError) as exc:
            self._bury(entry_id, fields, f"not an alert entry: {exc!r}")
            return
        try:
            self.handler(alert)
        except Exception as exc:  # noqa: BLE001 - any handler failure means: do not acknowledge, retry later
            self.stats.failed += 1
            log.warning("handler failed on %s (%s); left pending for a retry", entry_id, exc)
            return
        self.r.xack(self.stream, self.group, entry_id)
        self.stats.handled += 1

    def _bury(self, entry_id: str, fields: dict[str, str], reason: str) -> None:
        """Copy to the dead-letter stream, then acknowledge (a crash in between only duplicates it there)."""
        extra = {"dead_entry_id": entry_id, "dead_group": self.group, "dead_reason": reason}
        self.r.xadd(self.dead_stream, {**fields, **extra})
        self.r.xack(self.stream, self.group, entry_id)
        self.stats.dead += 1
        log.error("moved %s to %s: %s", entry_id, self.dead_stream, reason)


def print_json(alert: AlertRecord) -> None:
    """The ``latentwatch consume`` handler: one JSON line per alert on stdout.
    A failed write (closed pipe) raises, so the alert is not acknowledged."""
    print(alert.to_json(), flush=True)
