"""``HFCapture``: forward hooks on an HF causal LM that copy residual-stream rows to a monitor.

A hook puts the rows after a decoder layer (the layer's output) in the
monitor's hands and never waits for the sidecar.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import torch

from latentwatch.capture.client import GrpcMonitorClient
from latentwatch.capture.local import LocalMonitor
from latentwatch.capture.lookback import LookbackTracker, parse_heads
from latentwatch.detectors.base import Span
from latentwatch.v1 import monitor_pb2 as pb

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

Monitor = LocalMonitor | GrpcMonitorClient


class HFCapture:
    """Forward hooks on an HF causal LM's decoder layers (and, for chosen
    attention heads, their lookback ratios).

    One request is captured at a time (batch size 1 per forward): wrap a
    ``generate`` or forward call in ``with capture.request(id, spans):``.
    Batched serving is the vLLM integration's job. Lookback ratios are
    computed only for requests that carry a CONTEXT span.

    With a ``tokenizer``, each forward's tokens are decoded and sent with the
    first hook's rows, so alerts can quote the flagged tokens where the
    sidecar's ``alert_text`` setting allows it (it keeps none by default).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        hook_names: list[str],
        monitor: Monitor,
        heads: list[str] = (),
        tokenizer: PreTrainedTokenizerBase | None = None,
    ):
        self.monitor = monitor
        self.hook_names = hook_names
        self.heads = [str(h) for h in parse_heads(list(heads))]
        self._active: str | None = None
        self._positions: dict[str, int] = {}
        self._tokenizer = tokenizer
        self._text: tuple[str, ...] = ()  # the current forward's token text
        self._handles = [model.get_submodule(name).register_forward_hook(self._hook(name)) for name in hook_names]
        if tokenizer is not None:
            self._handles.append(model.register_forward_pre_hook(self._read_tokens, with_kwargs=True))
        self._lookback = LookbackTracker(model, parse_heads(self.heads), emit=self._emit_lookback) if heads else None

    def _hook(self, name: str):
        def fn(module, args, output) -> None:
            if self._active is None:
                return
            hidden = output[0] if isinstance(output, tuple) else output
            if hidden.shape[0] != 1:
                raise ValueError("HFCapture captures one request per forward (batch size 1)")
            rows = hidden[0].detach().to("cpu", copy=True)
            start = self._positions[name]
            self._positions[name] = start + rows.shape[0]
            text = self._text if name == self.hook_names[0] and len(self._text) == rows.shape[0] else ()
            self.monitor.send_chunk(self._active, name, start, rows, text)

        return fn

    def _read_tokens(self, module, args, kwargs) -> None:
        """Decode the tokens this forward feeds the model (none when it is given embeddings)."""
        ids = kwargs.get("input_ids", args[0] if args else None)
        if self._active is None or ids is None or ids.dim() != 2 or ids.shape[0] != 1:
            self._text = ()
            return
        pieces = [[i] for i in ids[0].tolist()]
        self._text = tuple(self._tokenizer.batch_decode(pieces, clean_up_tokenization_spaces=False))

    def _emit_lookback(self, start: int, ratios: torch.Tensor) -> None:
        if self._active is not None:
            self.monitor.send_attention(self._active, start, self.heads, ratios)

    @contextlib.contextmanager
    def request(self, request_id: str, spans: list[Span]):
        if self._active is not None:
            raise RuntimeError(f"request {self._active!r} is still being captured")
        self.monitor.start_request(request_id, spans)
        self._active = request_id
        self._positions = dict.fromkeys(self.hook_names, 0)
        context = [s for s in spans if s.role == pb.SPAN_ROLE_CONTEXT]
        response = [s for s in spans if s.role == pb.SPAN_ROLE_RESPONSE]
        if self._lookback is not None and context:
            start = response[0].start if response else max(s.end for s in spans)
            self._lookback.begin((context[0].start, context[-1].end), start)
        try:
            yield self
        finally:
            self._active = None
            if self._lookback is not None:
                self._lookback.end()
            self.monitor.end_request(request_id)

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        if self._lookback is not None:
            self._lookback.remove()
