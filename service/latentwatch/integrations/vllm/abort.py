"""Act on alerts in vLLM: abort a request when a chosen detector fires.

Runs in the API server's process. A background thread subscribes to the
sidecar's ``WatchAlerts`` for the detectors named in ``abort`` (alerting
detectors only: a detector with ``alert: false`` raises no alert to act on)
and aborts the alert's request through the engine client, by the id the
client sees (alerts carry it). The finished choice then has
``finish_reason: "abort"`` and, in ``stop_reason``, which detector stopped it.
Observe-only is the default: with ``abort`` empty nothing here runs.
When the sidecar is away the thread reconnects with backoff; requests go on.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections import OrderedDict

import grpc

from latentwatch.integrations.vllm.settings import Settings, once
from latentwatch.v1 import monitor_pb2 as pb
from latentwatch.v1 import monitor_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)
REASON_PREFIX = "latentwatch:"


def abort_reason(alert: pb.Alert) -> str:
    """What the client reads in ``stop_reason``."""
    return f"{REASON_PREFIX} {alert.detector} flagged this request (score {alert.score:.3f} >= {alert.threshold:.3f})"


class AbortWatcher:
    """Turns alerts of chosen detectors into aborts on one engine client's event loop."""

    MAX_REASONS = 10_000  # reasons kept for requests whose final output has not been seen

    def __init__(self, settings: Settings, engine, loop: asyncio.AbstractEventLoop):
        self.settings = settings
        self.engine = engine
        self.loop = loop
        self.reasons: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="latentwatch-abort", daemon=True)
        self._thread.start()

    def reason(self, request_id: str) -> str | None:
        with self._lock:
            return self.reasons.pop(request_id, None)

    def _run(self) -> None:
        delay = 0.2
        while True:
            try:
                with self.settings.auth.channel(self.settings.sidecar) as channel:
                    stub = pb_grpc.MonitorStub(channel)
                    for alert in stub.WatchAlerts(pb.WatchAlertsRequest(detectors=list(self.settings.abort))):
                        delay = 0.2
                        self._abort(alert)
            except grpc.RpcError as exc:
                log.debug("latentwatch: alert subscription broke (%s); retrying in %.1fs", exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _abort(self, alert: pb.Alert) -> None:
        with self._lock:
            self.reasons[alert.request_id] = abort_reason(alert)
            while len(self.reasons) > self.MAX_REASONS:
                self.reasons.popitem(last=False)
        log.info("latentwatch: aborting %s (%s flagged)", alert.request_id, alert.detector)
        asyncio.run_coroutine_threadsafe(self.engine.abort(alert.request_id), self.loop)


def patch_generate(settings: Settings) -> None:
    """Wrap ``AsyncLLM.generate``: start the watcher with the first request, and put
    the reason into the final output of a request it aborted."""
    from vllm.v1.engine.async_llm import AsyncLLM

    def make(original):
        @functools.wraps(original)
        async def generate(self, *args, **kwargs):
            watcher = getattr(self, "_latentwatch_abort", None)
            if watcher is None:
                watcher = self._latentwatch_abort = AbortWatcher(settings, self, asyncio.get_running_loop())
            async for out in original(self, *args, **kwargs):
                if out.finished and any(c.finish_reason == "abort" for c in out.outputs):
                    reason = watcher.reason(out.request_id)
                    if reason is not None:
                        for c in out.outputs:
                            c.stop_reason = reason
                yield out

        return generate

    once(AsyncLLM, "generate", make)
