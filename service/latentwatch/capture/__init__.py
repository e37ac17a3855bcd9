"""Capture: getting activations out of a model and to a monitor.

Live: ``hf`` (forward hooks on an HF model), ``client`` (the gRPC stream to a
sidecar), ``local`` (the sidecar's engine in-process), ``lookback`` (attention
statistics of chosen heads). Offline: ``teacher_forced`` (forwards over whole
transcripts), ``chat`` (messages to token ids and span roles) and ``score``
(``latentwatch score``). ``metrics`` exports a client's drop counts.
"""

from latentwatch.capture.client import GrpcMonitorClient
from latentwatch.capture.hf import HFCapture, Monitor
from latentwatch.capture.local import LocalMonitor

__all__ = ["GrpcMonitorClient", "HFCapture", "LocalMonitor", "Monitor"]
