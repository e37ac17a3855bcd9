"""``LocalMonitor``: the sidecar's engine in-process, with no network, for notebooks and batch scoring."""

from __future__ import annotations

from collections.abc import Callable

import torch

from latentwatch.capture.finals import Finals
from latentwatch.detectors.base import Span
from latentwatch.detectors.records import Verdict
from latentwatch.sidecar.engine import Engine


class LocalMonitor:
    """In-process monitor: the engine runs in the caller's thread."""

    def __init__(self, engine: Engine, model_id: str, on_verdict: Callable[[Verdict], None] | None = None):
        self.engine = engine
        self.model_id = model_id
        self.on_verdict = on_verdict
        self._finals = Finals()

    @property
    def dropped(self) -> int:
        return 0

    def start_request(self, request_id: str, spans: list[Span]) -> None:
        self.engine.start(request_id, self.model_id, spans)

    def send_chunk(
        self,
        request_id: str,
        hook_name: str,
        start_position: int,
        rows: torch.Tensor,
        text: tuple[str, ...] = (),
        ids: tuple[int, ...] = (),
    ) -> None:
        if text:
            self.engine.add_text(request_id, start_position, list(text))
        token_ids = torch.tensor(ids, dtype=torch.long) if len(ids) else None
        for v in self.engine.add_chunk(request_id, hook_name, start_position, rows.float(), token_ids).verdicts:
            if self.on_verdict:
                self.on_verdict(v)

    def send_attention(self, request_id: str, start_position: int, heads: list[str], lookback: torch.Tensor) -> None:
        for v in self.engine.add_attention(request_id, start_position, heads, lookback.float()).verdicts:
            if self.on_verdict:
                self.on_verdict(v)

    def end_request(self, request_id: str) -> None:
        for v in self.engine.end(request_id).verdicts:
            self._finals.add(v)
            if self.on_verdict:
                self.on_verdict(v)
        self._finals.done(request_id)

    def wait_final(self, request_id: str, timeout: float = 30.0) -> list[Verdict] | None:
        return self._finals.wait(request_id, timeout)

    def close(self) -> None:
        pass
