"""Capture residual-stream rows from an HF causal LM and hand them to a monitor.

``HFCapture`` puts forward hooks on the configured layers (the residual
stream after the layer: the decoder layer's output). A hook only copies the
rows and hands them to a client; it never waits for the sidecar.

Clients:
- ``GrpcMonitorClient`` sends from a background thread over the Stream RPC
  with a bounded buffer: when the buffer is full, chunks are dropped and
  counted (and the count reaches the sidecar's dropped-chunks metric); when
  the sidecar is away it reconnects with exponential backoff.
- ``LocalMonitor`` runs the same engine in-process, with no network, for
  notebooks and batch scoring.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, NamedTuple

import grpc
import torch
from latentwatch.detectors.base import Span
from latentwatch.engine import Engine
from latentwatch.lookback import LookbackTracker, parse_heads
from latentwatch.records import Verdict
from latentwatch.security import ClientAuth
from latentwatch.tensors import to_wire
from latentwatch.v1 import monitor_pb2 as pb
from latentwatch.v1 import monitor_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)


class _Finals:
    """Final verdicts per request, with a way to wait for them. Only the ``keep`` most recently
    finished requests are kept: a model server that never asks must not grow without bound."""

    def __init__(self, keep: int = 10_000) -> None:
        self._cv = threading.Condition()
        self._keep = keep
        self._verdicts: dict[str, list[Verdict] | None] = {}
        self._done: OrderedDict[str, None] = OrderedDict()  # finished requests, oldest first

    def add(self, v: Verdict) -> None:
        with self._cv:
            verdicts = self._verdicts.setdefault(v.request_id, [])
            if verdicts is not None:
                verdicts.append(v)

    def done(self, request_id: str) -> None:
        with self._cv:
            self._finish_locked(request_id)

    def lost(self, request_id: str) -> None:
        """No final verdicts will come (the stream carrying the request broke): waiters get None."""
        with self._cv:
            self._verdicts[request_id] = None
            self._finish_locked(request_id)

    def _finish_locked(self, request_id: str) -> None:
        self._done[request_id] = None
        while len(self._done) > self._keep:
            oldest, _ = self._done.popitem(last=False)
            self._verdicts.pop(oldest, None)
        self._cv.notify_all()

    def wait(self, request_id: str, timeout: float) -> list[Verdict] | None:
        with self._cv:
            if not self._cv.wait_for(lambda: request_id in self._done, timeout):
                return None
            del self._done[request_id]
            return self._verdicts.pop(request_id, [])


class _Rows(NamedTuple):
    """Buffered rows of one request: activations of a hook, or lookback ratios of heads."""

    request_id: str
    hook_name: str  # "" for lookback ratios
    start: int
    rows: torch.Tensor
    heads: tuple[str, ...] | None = None  # set for lookback ratios
    text: tuple[str, ...] | None = None  # each row's token text, when the capture sends it
    ready: object = None  # a CUDA event when ``rows`` is still being copied from the device

    def landed(self) -> bool:
        return self.ready is None or self.ready.query()

    def to_message(self, drops: int) -> pb.ClientMessage:
        if self.heads is not None:
            return pb.ClientMessage(
                attention=pb.AttentionChunk(
                    request_id=self.request_id,
                    start_position=self.start,
                    heads=list(self.heads),
                    lookback=to_wire(self.rows),
                    dropped_since_last=drops,
                )
            )
        return pb.ClientMessage(
            chunk=pb.ActivationChunk(
                request_id=self.request_id,
                hook_name=self.hook_name,
                start_position=self.start,
                activations=to_wire(self.rows),
                dropped_since_last=drops,
                token_text=self.text or (),
            )
        )


class LocalMonitor:
    """In-process monitor: the engine runs in the caller's thread."""

    def __init__(self, engine: Engine, model_id: str, on_verdict: Callable[[Verdict], None] | None = None):
        self.engine = engine
        self.model_id = model_id
        self.on_verdict = on_verdict
        self._finals = _Finals()

    @property
    def dropped(self) -> int:
        return 0

    def start_request(self, request_id: str, spans: list[Span]) -> None:
        self.engine.start(request_id, self.model_id, spans)

    def send_chunk(
        self, request_id: str, hook_name: str, start_position: int, rows: torch.Tensor, text: tuple[str, ...] = ()
    ) -> None:
        if text:
            self.engine.add_text(request_id, start_position, list(text))
        for v in self.engine.add_chunk(request_id, hook_name, start_position, rows.float()):
            if self.on_verdict:
                self.on_verdict(v)

    def send_attention(self, request_id: str, start_position: int, heads: list[str], lookback: torch.Tensor) -> None:
        for v in self.engine.add_attention(request_id, start_position, heads, lookback.float()):
            if self.on_verdict:
                self.on_verdict(v)

    def end_request(self, request_id: str) -> None:
        for v in self.engine.end(request_id):
            self._finals.add(v)
            if self.on_verdict:
                self.on_verdict(v)
        self._finals.done(request_id)

    def wait_final(self, request_id: str, timeout: float = 30.0) -> list[Verdict] | None:
        return self._finals.wait(request_id, timeout)

    def close(self) -> None:
        pass


class GrpcMonitorClient:
    """Streams activations to a sidecar without ever blocking the caller."""

    def __init__(
        self,
        target: str,
        model_id: str,
        max_buffer: int = 1024,
        on_verdict: Callable[[Verdict], None] | None = None,
        backoff_initial_s: float = 0.1,
        backoff_max_s: float = 5.0,
        max_rows_per_chunk: int = 64,
        auth: ClientAuth | None = None,
    ):
        self.target = target
        self.auth = auth or ClientAuth()
        self.model_id = model_id
        self.max_buffer = max_buffer
        self.max_rows_per_chunk = max_rows_per_chunk
        self.on_verdict = on_verdict
        # Counts since creation; export them with latentwatch.metrics.CaptureCollector.
        self.drops = {"buffer_full": 0, "stream_lost": 0}  # chunks never sent, by reason
        self.rejected = 0  # messages the sidecar refused
        self.interrupted = 0  # requests whose stream broke before their final verdicts came
        self.reconnects = 0  # streams opened after the first
        self.dropped_control = 0  # request starts/ends dropped: the sidecar was away for very long
        self._open: dict[str, bool] = {}  # request id -> its end was sent; requests on the current stream
        self._cut_off: set[str] = set()  # requests whose stream broke; their remaining messages are dropped
        self.errors: deque[pb.StreamError] = deque(maxlen=256)  # the most recent refusals
        self._unreported_drops = 0
        self._buf: deque[tuple[pb.ClientMessage, bool]] = deque()
        self._chunks_buffered = 0
        self._cv = threading.Condition()
        self._closed = False
        self._epoch = 0
        self._finals = _Finals()
        self._backoff = (backoff_initial_s, backoff_max_s)
        self._connected = threading.Event()
        self._thread = threading.Thread(target=self._run, name="latentwatch-sender", daemon=True)
        self._thread.start()

    # -- the caller's side (must stay cheap) -----------------------------------------

    def start_request(self, request_id: str, spans: list[Span]) -> None:
        msg = pb.RequestStart(
            request_id=request_id,
            model_id=self.model_id,
            spans=[pb.Span(role=s.role, start=s.start, end=s.end) for s in spans],
        )
        self._put(pb.ClientMessage(start=msg), droppable=False)

    def send_chunk(
        self,
        request_id: str,
        hook_name: str,
        start_position: int,
        rows: torch.Tensor,
        text: tuple[str, ...] = (),
        ready: object = None,
    ) -> None:
        """Enqueue rows; serialisation happens on the sender thread. ``ready``: a CUDA
        event recorded after an asynchronous copy into ``rows`` (waited for there)."""
        self._put(_Rows(request_id, hook_name, start_position, rows, text=text or None, ready=ready), droppable=True)

    def send_attention(
        self, request_id: str, start_position: int, heads: list[str], lookback: torch.Tensor, ready: object = None
    ) -> None:
        self._put(_Rows(request_id, "", start_position, lookback, tuple(heads), ready=ready), droppable=True)

    def end_request(self, request_id: str) -> None:
        self._put(pb.ClientMessage(end=pb.RequestEnd(request_id=request_id)), droppable=False)

    def wait_final(self, request_id: str, timeout: float = 30.0) -> list[Verdict] | None:
        return self._finals.wait(request_id, timeout)

    @property
    def dropped(self) -> int:
        return sum(self.drops.values())

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def close(self, flush_timeout: float = 5.0) -> None:
        deadline = time.monotonic() + flush_timeout
        with self._cv:
            while self._buf and time.monotonic() < deadline:
                self._cv.wait(0.05)
            self._closed = True
            self._cv.notify_all()
        self._thread.join(timeout=2.0)

    def _put(self, item, droppable: bool) -> None:
        with self._cv:
            if droppable:
                if self._chunks_buffered >= self.max_buffer:
                    self.drops["buffer_full"] += 1
                    self._unreported_drops += 1
                    return
                self._chunks_buffered += 1
            elif len(self._buf) - self._chunks_buffered >= 4 * self.max_buffer:
                self.dropped_control += 1  # bounded too: a long outage must not grow memory without end
                return
            self._buf.append((item, droppable))
            if len(self._buf) == 1:
                self._cv.notify_all()  # the sender waits only on an empty buffer

    # -- the sender thread ------------------------------------------------------------------

    def _messages(self, epoch: int) -> Iterator[pb.ClientMessage]:
        while True:
            with self._cv:
                while not self._buf and not self._closed and self._epoch == epoch:
                    self._cv.wait(0.1)
                if self._epoch != epoch or (self._closed and not self._buf):
                    return
                item, droppable = self._buf.popleft()
                if droppable:
                    self._chunks_buffered -= 1
            if droppable and not item.landed():
                item.ready.synchronize()  # outside the lock: the engine keeps enqueueing meanwhile
            with self._cv:
                self._cv.notify_all()
                if self._cut_off_locked(item, droppable):
                    continue
                drops = 0
                if droppable:
                    item = self._coalesce(item)
                    drops, self._unreported_drops = self._unreported_drops, 0
            yield item.to_message(drops) if droppable else item

    def _cut_off_locked(self, item, droppable: bool) -> bool:
        """Track which requests the current stream carries; True (and count the chunk) for a
        message of a request whose stream broke: a new sidecar never saw its start and one that
        survived lost its chunks in flight, so its verdicts could not be trusted anyway."""
        kind = None if droppable else item.WhichOneof("kind")
        request_id = item.request_id if droppable else getattr(item, kind).request_id
        if request_id in self._cut_off and kind != "start":  # a start reuses the id for a new request
            if droppable:
                self.drops["stream_lost"] += 1
            elif kind == "end":
                self._cut_off.discard(request_id)  # nothing more of it will come
            return True
        self._cut_off.discard(request_id)
        if kind == "start":
            self._open[request_id] = False
        elif kind == "end" and request_id in self._open:
            self._open[request_id] = True
        return False

    def _stream_broke_locked(self) -> None:
        for request_id, ended in self._open.items():
            self.interrupted += 1
            self._finals.lost(request_id)
            if not ended:
                self._cut_off.add(request_id)
        self._open.clear()

    def _coalesce(self, item):
        """Merge buffered rows continuing ``item`` (same request and hook,
        adjacent positions) into one chunk; called with the lock held. While
        the sidecar keeps up this finds nothing; when it lags, per-token
        decode rows travel as one message instead of many."""
        parts = [item.rows]
        texts = [item.text]
        start = item.start
        end = start + item.rows.shape[0]
        skipped: list = []
        # Scan up to the next control message (never move rows past a RequestEnd).
        budget = 4 * self.max_rows_per_chunk  # bound the scan: O(1) per message, not O(buffer)
        while self._buf and self._buf[0][1] and end - start < self.max_rows_per_chunk and budget > 0:
            budget -= 1
            entry = self._buf.popleft()
            nxt = entry[0]
            same_stream = (nxt.request_id, nxt.hook_name, nxt.heads) == (item.request_id, item.hook_name, item.heads)
            if same_stream and nxt.start == end and nxt.landed():
                self._chunks_buffered -= 1
                parts.append(nxt.rows)
                texts.append(nxt.text)
                end += nxt.rows.shape[0]
            else:
                skipped.append(entry)
        self._buf.extendleft(reversed(skipped))
        if len(parts) == 1:
            return item
        # Text stays aligned with rows only if every merged piece carries it.
        text = tuple(t for part in texts for t in part) if all(texts) else None
        return item._replace(rows=torch.cat(parts), text=text, ready=None)

    def _run(self) -> None:
        delay = self._backoff[0]
        warned = False
        opened = 0
        while not self._closed:
            with self._cv:
                self._epoch += 1
                epoch = self._epoch
            try:
                with self.auth.channel(self.target) as channel:
                    grpc.channel_ready_future(channel).result(timeout=delay * 10)
                    if opened:
                        self.reconnects += 1
                    opened += 1
                    self._connected.set()
                    delay = self._backoff[0]
                    for msg in pb_grpc.MonitorStub(channel).Stream(self._messages(epoch)):
                        self._handle(msg)
                    if self._closed:
                        return
            except (grpc.RpcError, grpc.FutureTimeoutError) as exc:
                refused = isinstance(exc, grpc.Call) and exc.code() == grpc.StatusCode.UNAUTHENTICATED
                # A refused token is a configuration mistake someone must see (once, not every retry);
                # a sidecar away is routine.
                level = logging.WARNING if refused and not warned else logging.DEBUG
                warned = refused
                log.log(level, "sidecar stream broke (%s); retrying in %.2fs", exc, delay)
            self._connected.clear()
            with self._cv:
                self._epoch += 1  # stop the old request iterator
                self._stream_broke_locked()
                self._cv.notify_all()
            time.sleep(delay)
            delay = min(delay * 2, self._backoff[1])

    def _handle(self, msg: pb.ServerMessage) -> None:
        kind = msg.WhichOneof("kind")
        if kind == "verdict":
            v = Verdict.from_pb(msg.verdict)
            if v.final:
                self._finals.add(v)
            if self.on_verdict:
                self.on_verdict(v)
        elif kind == "done":
            with self._cv:
                self._open.pop(msg.done.request_id, None)
            self._finals.done(msg.done.request_id)
        elif kind == "error":
            # After a reconnect, chunks of requests whose start was lost are
            # refused one by one: count them, keep a few, never flood the log.
            self.rejected += 1
            self.errors.append(msg.error)
            log.debug("sidecar rejected a message: %s", msg.error.message)


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
