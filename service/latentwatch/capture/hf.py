"""``HFCapture``: forward hooks on an HF causal LM that copy residual-stream rows to a monitor.

A hook puts the rows after a decoder layer (the layer's output) in the
monitor's hands and never waits for the sidecar.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from latentwatch.capture.client import GrpcMonitorClient
from latentwatch.capture.local import LocalMonitor
from latentwatch.capture.lookback import LookbackTracker, parse_heads
from latentwatch.detectors.base import Span
from latentwatch.detectors.records import Verdict
from latentwatch.detectors.steering import SteerEdit
from latentwatch.v1 import monitor_pb2 as pb

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

Monitor = LocalMonitor | GrpcMonitorClient


@dataclass
class _Row:
    """One request in the batch being captured."""

    request_id: str
    pad: int  # left-padding tokens in front of its prompt
    positions: dict[str, int]  # per hook: the next position to send
    finished: bool = False  # it produced its end token: later rows are padding


class HFCapture:
    """Forward hooks on an HF causal LM's decoder layers (and, for chosen
    attention heads, their lookback ratios).

    Wrap a forward or ``generate`` call in ``with capture.request(id, spans):``
    for one request, or in ``with capture.requests([(id, spans), ...],
    attention_mask):`` for a left-padded batch: each batch row is its own
    request, its padding is dropped, and once it has produced an end token
    (the model's ``eos_token_id``, or ``stop_ids``) the rows ``generate`` keeps
    computing for it are dropped too, so every request's rows are those a
    batch-1 capture would send. Lookback ratios are computed for single
    requests that carry a CONTEXT span.

    With a ``tokenizer``, each forward's tokens are decoded and sent with the
    first hook's rows, so alerts can quote the flagged tokens where the
    sidecar's ``alert_text`` setting allows it (it keeps none by default).

    With ``act=True`` it applies the edits verdicts hand over (a detector whose
    spec says ``act: steer``, on a sidecar whose ``act`` allows it): from the
    forward after the verdict arrives, every row of that request, and of that
    request only, gets ``strength * ||row|| * direction`` added at the edit's
    layer. ``actions`` records what was applied, per request. Nothing is added
    while no request is steered.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        hook_names: list[str],
        monitor: Monitor,
        heads: list[str] = (),
        tokenizer: PreTrainedTokenizerBase | None = None,
        stop_ids: list[int] | None = None,
        act: bool = False,
    ):
        self.monitor = monitor
        self.model = model
        self.hook_names = hook_names
        self.heads = [str(h) for h in parse_heads(list(heads))]
        self._rows: list[_Row] = []
        self._tokenizer = tokenizer
        self._text: list[tuple[str, ...]] = []  # per batch row: the current forward's token text
        self._ids: list[tuple[int, ...]] = []  # per batch row: the current forward's token ids
        if stop_ids is None:
            config = getattr(model, "generation_config", None)
            eos = getattr(config, "eos_token_id", None)
            stop_ids = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
            pad = getattr(config, "pad_token_id", None)
            stop_ids += [pad] if pad is not None else []
        self._stop = torch.tensor(sorted(set(stop_ids)), dtype=torch.long)
        self._handles = [model.get_submodule(name).register_forward_hook(self._hook(name)) for name in hook_names]
        self._handles.append(model.register_forward_pre_hook(self._read_tokens, with_kwargs=True))
        self._lookback = LookbackTracker(model, parse_heads(self.heads), emit=self._emit_lookback) if heads else None
        self.actions: dict[str, list[dict]] = {}  # request id -> the actions applied to it
        self._edits: dict[str, SteerEdit] = {}  # request id -> its edit, from its next forward on
        self._steering: list[tuple[int, SteerEdit]] = []  # (batch row, edit) for the forward under way
        self._steer_hooks: dict[str, torch.utils.hooks.RemovableHandle] = {}
        if act:
            previous = monitor.on_verdict

            def on_verdict(v: Verdict) -> None:
                if v.steer is not None:
                    self._edits[v.request_id] = v.steer
                    self.actions.setdefault(v.request_id, []).append(
                        {"detector": v.detector, "action": v.action, "after_token": v.token_end}
                    )
                if previous is not None:
                    previous(v)

            monitor.on_verdict = on_verdict

    def _steer_hook(self, name: str):
        def fn(module, args, output) -> None:
            hidden = output[0] if isinstance(output, tuple) else output
            for b, edit in self._steering:
                if edit.hook_name == name:
                    row = hidden[b]  # a view: the edit reaches the layers above
                    row += edit.strength * row.norm(dim=-1, keepdim=True) * edit.direction.to(row)

        return fn

    def _hook(self, name: str):
        def fn(module, args, output) -> None:
            if not self._rows:
                return
            hidden = output[0] if isinstance(output, tuple) else output
            if hidden.shape[0] != len(self._rows):
                raise ValueError(f"capturing {len(self._rows)} requests, but the forward has batch {hidden.shape[0]}")
            first = name == self.hook_names[0]
            batch = hidden.detach().to("cpu", copy=True)  # one copy; each request's rows are a view of it
            for b, row in enumerate(self._rows):
                if row.finished:
                    continue
                skip = row.pad if row.positions[name] == 0 else 0  # padding comes only before the prompt
                rows = batch[b, skip:]
                start = row.positions[name]
                row.positions[name] = start + rows.shape[0]
                text = self._text[b] if first and b < len(self._text) and len(self._text[b]) == rows.shape[0] else ()
                ids = self._ids[b] if b < len(self._ids) and len(self._ids[b]) == rows.shape[0] else ()
                self.monitor.send_chunk(row.request_id, name, start, rows, text, ids=ids)

        return fn

    def _read_tokens(self, module, args, kwargs) -> None:
        """Mark the rows that have finished (their input is an end token after the prompt), and
        decode the tokens this forward feeds the model (none when it is given embeddings)."""
        self._text, self._ids = [], []
        edits = self._edits
        self._steering = [(b, edits[r.request_id]) for b, r in enumerate(self._rows) if r.request_id in edits]
        for _, edit in self._steering:
            if edit.hook_name not in self._steer_hooks:  # after the capture hook: the monitor sees unedited rows
                hook = self.model.get_submodule(edit.hook_name).register_forward_hook(self._steer_hook(edit.hook_name))
                self._steer_hooks[edit.hook_name] = hook
        ids = kwargs.get("input_ids", args[0] if args else None)
        if not self._rows or ids is None or ids.dim() != 2 or ids.shape[0] != len(self._rows):
            return
        ended = torch.isin(ids[:, -1], self._stop).tolist()
        for row, end in zip(self._rows, ended, strict=True):
            started = bool(self.hook_names) and row.positions[self.hook_names[0]] > 0
            if end and started and not row.finished:
                row.finished = True
        for b, row in enumerate(self._rows):
            skip = row.pad if row.positions.get(self.hook_names[0], 0) == 0 else 0
            self._ids.append(tuple(ids[b, skip:].tolist()))
            if self._tokenizer is not None:
                pieces = [[i] for i in self._ids[-1]]
                self._text.append(tuple(self._tokenizer.batch_decode(pieces, clean_up_tokenization_spaces=False)))

    def _emit_lookback(self, start: int, ratios: torch.Tensor) -> None:
        if len(self._rows) == 1:
            self.monitor.send_attention(self._rows[0].request_id, start, self.heads, ratios)

    def request(self, request_id: str, spans: list[Span]):
        """Capture one request (batch size 1)."""
        return self.requests([(request_id, spans)])

    @contextlib.contextmanager
    def requests(self, items: list[tuple[str, list[Span]]], attention_mask: torch.Tensor | None = None):
        """Capture a batch: row ``b`` of the forward is request ``items[b]``, whose spans count
        its own tokens (padding excluded). ``attention_mask`` gives the left padding."""
        if self._rows:
            raise RuntimeError(f"request {self._rows[0].request_id!r} is still being captured")
        pads = [0] * len(items)
        if attention_mask is not None:
            mask = attention_mask.bool()
            if mask.shape[0] != len(items):
                raise ValueError(f"{len(items)} requests for an attention mask of batch {mask.shape[0]}")
            if (mask[:, 1:].int() < mask[:, :-1].int()).any():
                raise ValueError("HFCapture needs left padding (padding_side='left') for batched generation")
            pads = (~mask).sum(1).tolist()
        with_context = [rid for rid, spans in items if any(s.role == pb.SPAN_ROLE_CONTEXT for s in spans)]
        if self._lookback is not None and with_context and len(items) > 1:
            raise ValueError("lookback ratios are captured one request at a time; capture requests with context alone")
        for rid, spans in items:
            self.monitor.start_request(rid, spans)
        self._rows = [
            _Row(rid, pad, dict.fromkeys(self.hook_names, 0)) for (rid, _), pad in zip(items, pads, strict=True)
        ]
        if self._lookback is not None and with_context:
            spans = items[0][1]
            context = [s for s in spans if s.role == pb.SPAN_ROLE_CONTEXT]
            response = [s for s in spans if s.role == pb.SPAN_ROLE_RESPONSE]
            start = response[0].start if response else max(s.end for s in spans)
            self._lookback.begin((context[0].start, context[-1].end), start)
        try:
            yield self
        finally:
            self._rows = []
            self._steering = []
            for rid, _ in items:
                self._edits.pop(rid, None)
            if self._lookback is not None:
                self._lookback.end()
            for rid, _ in items:
                self.monitor.end_request(rid)

    def remove(self) -> None:
        for h in [*self._handles, *self._steer_hooks.values()]:
            h.remove()
        self._handles = []
        self._steer_hooks = {}
        if self._lookback is not None:
            self._lookback.remove()
