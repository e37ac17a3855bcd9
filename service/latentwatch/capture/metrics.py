"""A capture client's counts as Prometheus metrics, for the model server's own ``/metrics``."""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from latentwatch.capture.client import GrpcMonitorClient


class CaptureCollector(Collector):
    """A capture client's counts, for the model server's own /metrics: what the monitor lost
    is visible where the model runs, even while no sidecar is reachable to count it.
    Register one per client: ``registry.register(CaptureCollector(client))``."""

    def __init__(self, client: GrpcMonitorClient):
        self.client = client

    def collect(self):
        c = self.client
        dropped = CounterMetricFamily(
            "latentwatch_capture_chunks_dropped",
            "Chunks the capture client never sent: buffer_full (sidecar slow or away), "
            "stream_lost (their request's stream broke).",
            labels=["reason"],
        )
        for reason, n in c.drops.items():
            dropped.add_metric([reason], n)
        yield dropped
        yield CounterMetricFamily(
            "latentwatch_capture_requests_interrupted",
            "Requests whose stream broke before their final verdicts came.",
            value=c.interrupted,
        )
        yield CounterMetricFamily(
            "latentwatch_capture_refused_messages", "Messages the sidecar refused.", value=c.rejected
        )
        yield CounterMetricFamily(
            "latentwatch_capture_reconnects", "Streams to the sidecar opened after the first.", value=c.reconnects
        )
        yield CounterMetricFamily(
            "latentwatch_capture_control_messages_dropped",
            "Request starts and ends never sent: the sidecar was away long enough to fill their bound.",
            value=c.dropped_control,
        )
