"""One sidecar, several monitored models: a request's ``model_id`` picks its engine.

Each model has its own detector pack (SAEs, probes, thresholds), so each gets
its own ``Engine``; the router sends a request to the engine its
``RequestStart`` named and every later message of that request to the same
one. With explicit ``detector_specs`` there is a single engine and every model
id goes to it (the operator chose the detectors, not a pack).
"""

from __future__ import annotations

import threading
from collections import defaultdict

import grpc

from latentwatch.detectors.base import Detector, Span
from latentwatch.detectors.packs import pack_name
from latentwatch.detectors.saes import LoadedSAE
from latentwatch.sidecar.engine import Chunk, Engine, Outcome
from latentwatch.wire.errors import MonitorError

ANY_MODEL = "*"


class Router:
    """The ``Engine`` calls the server makes, for several models."""

    def __init__(self, engines: dict[str, Engine]):
        if not engines:
            raise ValueError("a router needs at least one engine")
        self.engines = engines
        self._owner: dict[str, Engine] = {}
        self._lock = threading.Lock()

    # -- which engine ---------------------------------------------------------

    def engine_for_model(self, model_id: str) -> Engine:
        if ANY_MODEL in self.engines or not model_id:  # no model named: the first configured one
            return self.default
        name = model_id if model_id in self.engines else pack_name(model_id)
        if name not in self.engines:
            raise MonitorError(
                f"model {model_id!r} is not monitored here; this sidecar has detector packs for "
                f"{', '.join(sorted(self.engines))}",
                grpc.StatusCode.NOT_FOUND,
            )
        return self.engines[name]

    def engine_of(self, request_id: str) -> Engine:
        """The engine of a started request; an unknown one goes to any engine, whose
        own check answers with the usual FAILED_PRECONDITION sentence."""
        with self._lock:
            return self._owner.get(request_id) or self.default

    def detectors_of(self, model_id: str | None = None) -> list[tuple[str, Detector]]:
        """(model, detector) of one model, or of every model when ``model_id`` is empty."""
        engines = {model_id: self.engine_for_model(model_id)} if model_id else self.engines
        return [(m, d) for m, e in engines.items() for d in e.detectors]

    @property
    def default(self) -> Engine:
        """The first configured model's engine (what an empty model_id gets)."""
        return next(iter(self.engines.values()))

    @property
    def hook_names(self) -> list[str]:
        """The first model's monitored layers (a capture client for that model hooks these)."""
        return self.default.hook_names

    @property
    def heads(self) -> list[str]:
        return self.default.heads

    @property
    def detectors(self) -> list[Detector]:
        return [d for _, d in self.detectors_of()]

    @property
    def saes(self) -> list[LoadedSAE]:
        return [s for e in self.engines.values() for s in e.saes]

    @property
    def active_requests(self) -> int:
        return sum(e.active_requests for e in self.engines.values())

    # -- request lifecycle ----------------------------------------------------

    def start(self, request_id: str, model_id: str, spans: list[Span]) -> None:
        engine = self.engine_for_model(model_id)
        with self._lock:
            other = self._owner.get(request_id)
        if other is not None and other is not engine:
            raise MonitorError(f"request_id {request_id!r} is already open for another model",
                               grpc.StatusCode.ALREADY_EXISTS)  # fmt: skip
        engine.start(request_id, model_id, spans)
        with self._lock:
            self._owner[request_id] = engine

    def saes_for(self, request_id: str, hook_name: str) -> list[LoadedSAE]:
        engine = self.engine_of(request_id)
        saes = engine.by_hook.get(hook_name)
        if saes is None:
            raise MonitorError(f"unknown layer {hook_name!r}; this model's detectors read {engine.hook_names}")
        return saes

    def add_text(self, request_id: str, start_position: int, pieces: list[str]) -> None:
        self.engine_of(request_id).add_text(request_id, start_position, pieces)

    def add_chunks(self, chunks: list[Chunk]) -> list[Outcome | MonitorError]:
        """Each engine scores its own requests' chunks in one batch; results keep the input order."""
        groups: dict[int, list[int]] = defaultdict(list)
        engines: dict[int, Engine] = {}
        for i, c in enumerate(chunks):
            e = self.engine_of(c.request_id)
            groups[id(e)].append(i)
            engines[id(e)] = e
        results: list[Outcome | MonitorError] = [Outcome()] * len(chunks)
        for key, idx in groups.items():
            for i, r in zip(idx, engines[key].add_chunks([chunks[i] for i in idx]), strict=True):
                results[i] = r
        return results

    def add_attention(self, request_id: str, start_position: int, heads: list[str], lookback) -> Outcome:
        return self.engine_of(request_id).add_attention(request_id, start_position, heads, lookback)

    def end(self, request_id: str) -> Outcome:
        out = self.engine_of(request_id).end(request_id)
        with self._lock:
            self._owner.pop(request_id, None)
        return out

    def score(self, request_id: str, model_id: str, spans: list[Span], chunks, attention=(), text=()) -> Outcome:
        return self.engine_for_model(model_id).score(request_id, model_id, spans, chunks, attention, text)

    def expire(self) -> int:
        n = sum(e.expire() for e in self.engines.values())
        with self._lock:
            self._owner = {r: e for r, e in self._owner.items() if e.is_open(r)}
        return n
