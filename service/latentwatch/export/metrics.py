"""Prometheus metrics of the sidecar.

Names follow client_python conventions: ``latentwatch_<noun>_<unit>``,
counters end in ``_total``, base units (seconds), and labels only of bounded
value sets (detector, SAE, reason) - never a request id.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from latentwatch import __version__

if TYPE_CHECKING:
    from latentwatch.detectors.records import Outcome

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
        self.alerts_dropped = Counter(
            "latentwatch_alerts_dropped_total",
            "Alerts dropped because the export queue was full (the sinks could not keep up).",
            registry=r,
        )
        self.alerts_queued = Gauge(
            "latentwatch_alerts_queued", "Alerts waiting in the export queue for the sinks.", registry=r
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

    def record(self, outcome: Outcome) -> None:
        """Count what one engine call produced: the one place the scoring metrics are updated."""
        if outcome.chunks:
            self.chunks.inc(outcome.chunks)
        if outcome.tokens:
            self.tokens.inc(outcome.tokens)
        for sae, value in outcome.fvu:
            self.fvu.labels(sae).observe(value)
        for sae in outcome.low_confidence:
            self.low_confidence.labels(sae).inc()
        for v in outcome.verdicts:
            if v.final:
                self.scores.labels(v.detector).observe(v.score)
        for a in outcome.alerts:
            self.flagged.labels(a.detector).inc()
            self.alerts.labels(a.detector).inc()

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
