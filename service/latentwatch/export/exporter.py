"""The export queue: alerts leave the scoring path here.

The scoring thread only puts alert records into a bounded queue; one thread of
the exporter's own hands them to the sinks (Redis, SQLite, WatchAlerts). A
sink that stalls (a Redis that accepts connections and never answers) holds up
that thread only: scoring goes on. When the queue is full, new alerts are
dropped and counted (``latentwatch_alerts_dropped_total``) rather than making
scoring wait.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from latentwatch.detectors.records import AlertRecord
from latentwatch.export.sinks import FanOut

log = logging.getLogger(__name__)
_STOP = object()


class AlertExporter:
    def __init__(self, sinks: FanOut, maxsize: int = 10_000, on_drop: Callable[[], None] = lambda: None):
        self.sinks = sinks
        self._queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self._on_drop = on_drop
        self._thread = threading.Thread(target=self._run, name="latentwatch-alert-export", daemon=True)
        self._thread.start()

    def __len__(self) -> int:
        """Alerts waiting for the sinks."""
        return self._queue.unfinished_tasks

    def submit(self, alerts: list[AlertRecord]) -> None:
        """Queue alerts for the sinks; never blocks (a full queue drops and counts)."""
        for alert in alerts:
            try:
                self._queue.put_nowait(alert)
            except queue.Full:
                log.warning("alert export queue full; dropped %s alert for %s", alert.detector, alert.request_id)
                self._on_drop()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued alert has reached the sinks (or failed there); False on timeout."""
        done = threading.Event()

        def wait() -> None:
            self._queue.join()
            done.set()

        threading.Thread(target=wait, daemon=True).start()
        return done.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (up to ``timeout``), then close the sinks."""
        self.flush(timeout)
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(timeout=timeout)
        self.sinks.close()

    def _run(self) -> None:
        while True:
            alert = self._queue.get()
            try:
                if alert is _STOP:
                    return
                self.sinks.emit(alert)  # FanOut: a failing sink is logged and counted, never raised
            finally:
                self._queue.task_done()
