"""Prometheus metrics of the sidecar.

Names follow client_python conventions: ``latentwatch_<noun>_<unit>``,
counters end in ``_total``, base units (seconds), and labels only of bounded
value sets (detector, SAE, reason) - never a request id.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from latentwatch import __version__
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from latentwatch.capture import GrpcMonitorClient

SCORE_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
FVU_BUCKETS = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.0)
DROP_REASONS = ("client_buffer_full", "rejected")


class Metrics:
    """All metrics on one registry, so several sidecars can live in one process (tests)."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.flagged = Counter(
            "latentwatch_flagged_generations_total", "Generations a detector flagged.", ["detector"], registry=r
        )
        self.scores = Histogram(
            "latentwatch_detector_score",
            "Final detector scores per request.",
            ["detector"],
            buckets=SCORE_BUCKETS,
            registry=r,
        )
        self.latency = Histogram(
            "latentwatch_chunk_latency_seconds",
            "Time from a chunk's arrival to its verdicts.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.chunks = Counter("latentwatch_chunks_received_total", "Activation chunks accepted.", registry=r)
        self.tokens = Counter("latentwatch_tokens_processed_total", "Token rows encoded by SAEs.", registry=r)
        self.dropped = Counter(
            "latentwatch_chunks_dropped_total",
            "Chunks lost before scoring, by reason (client_buffer_full, rejected).",
            ["reason"],
            registry=r,
        )
        self.rejected = Counter(
            "latentwatch_rejected_messages_total",
            "Client messages rejected, by gRPC status code.",
            ["code"],
            registry=r,
        )
        self.active_streams = Gauge("latentwatch_active_streams", "Open Stream RPCs.", registry=r)
        self.active_requests = Gauge("latentwatch_active_requests", "Requests with live session state.", registry=r)
        self.fvu = Histogram(
            "latentwatch_sae_fraction_variance_unexplained",
            "Per-chunk fraction of variance the SAE fails to reconstruct.",
            ["sae"],
            buckets=FVU_BUCKETS,
            registry=r,
        )
        self.low_confidence = Counter(
            "latentwatch_low_confidence_requests_total",
            "Requests whose activations the SAE reconstructs worse than its stated bound.",
            ["sae"],
            registry=r,
        )
        self.alerts = Counter("latentwatch_alerts_total", "Alerts raised.", ["detector"], registry=r)
        self.sink_failures = Counter(
            "latentwatch_alert_sink_failures_total",
            "Alerts a sink failed to store; for Redis, alerts neither streamed nor spooled (lost).",
            ["sink"],
            registry=r,
        )
        self.alerts_spooled = Counter(
            "latentwatch_alerts_spooled_total", "Alerts written to the local spool because Redis failed.", registry=r
        )
        self.alerts_replayed = Counter(
            "latentwatch_alerts_replayed_total", "Spooled alerts later added to the Redis stream.", registry=r
        )
        self.spooled_alerts = Gauge(
            "latentwatch_spooled_alerts", "Alerts waiting in the local spool for Redis to return.", registry=r
        )
        self.watch_dropped = Counter(
            "latentwatch_watch_alerts_dropped_total",
            "Alerts not delivered to a slow WatchAlerts client.",
            registry=r,
        )
        self.unauthenticated = Counter(
            "latentwatch_unauthenticated_calls_total",
            "Calls refused for a missing or wrong bearer token.",
            registry=r,
        )
        Info("latentwatch_build", "Build information.", registry=r).info({"version": __version__})
        for reason in DROP_REASONS:
            self.dropped.labels(reason)

    def declare(self, detectors: Iterable[str] = (), saes: Iterable[str] = (), sinks: Iterable[str] = ()) -> None:
        """Export each known label set at 0 before its first event.

        A series that first appears at 1 has no ``increase()`` in Prometheus, so an
        alert on, say, the first harmful-compliance flag after a restart would never
        fire (deploy/prometheus/rules/latentwatch.yml relies on this).
        """
        for name in detectors:
            self.flagged.labels(name)
            self.alerts.labels(name)
        for sae in saes:
            self.low_confidence.labels(sae)
        for sink in sinks:
            self.sink_failures.labels(sink)


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
